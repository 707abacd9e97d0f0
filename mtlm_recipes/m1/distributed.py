"""The M1 trainer under FSDP: Accelerate's FSDP on CPU processes, and a sharded model saved as a plain one."""

import gc
import os
from pathlib import Path

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin, PartialState
from accelerate.utils import DistributedType
from torch.distributed.fsdp import FSDPModule
from transformers import PreTrainedModel


def enable_fsdp_on_cpu(accelerator: Accelerator) -> bool:
    """Turn FSDP on for a multi-process CPU run launched with an FSDP config, as Accelerate does on GPUs.

    Accelerate 1.15 enables FSDP only for accelerator devices: under `ACCELERATE_USE_CPU=true` (the only way it
    starts a gloo group on CPU through torchrun) it drops the launcher's FSDP config without a word and the run is
    plain data parallel. Torch's FSDP2 runs on CPU with gloo, and once the state says FSDP, `prepare`,
    `save_state` and `load_state` shard through the same code as on GPUs. No public Accelerate API does this,
    so both shared states are set here, in the one place that does it. Call it right after `Accelerator()`,
    before `prepare`; elsewhere it does nothing.

    Args:
        accelerator (`Accelerator`): The run's accelerator, just made.

    Returns:
        `bool`: Whether FSDP was turned on here.
    """
    launched_with_fsdp = os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true"
    if accelerator.distributed_type != DistributedType.MULTI_CPU or not launched_with_fsdp:
        return False
    # AcceleratorState copies PartialState's shared state whenever it is made again (Trainer makes it twice).
    PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
    accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables launch sets
    return True


def end_training(accelerator: Accelerator) -> None:
    """Free the prepared objects, then `accelerator.end_training()`; call it once the caller holds none of them.

    A DDP wrapper that outlives the process group holds the group's last reference in its C++ reducer, and
    freeing the wrapper then destroys the gloo group with the GIL held: that joins the group's worker threads,
    and a worker still finishing a collective waits for the GIL to free its tensors, so the process hangs at
    exit (seen with torch 2.13 on a loaded CPU). Freed here, while the group is registered, the wrapper drops a
    reference that is not the last, and destroying the group from Python releases the GIL first.
    """
    accelerator.free_memory()
    gc.collect()  # wrappers in reference cycles, which `free_memory`'s own collection ran too early to free
    accelerator.end_training()


def save_trained_model(accelerator: Accelerator, model: torch.nn.Module, folder: Path) -> PreTrainedModel:
    """`save_pretrained` a prepared model into `folder` (from the main process), sharded by FSDP2 or not.

    `fully_shard` swaps the model's class for a generated `FSDP<Class>`, and `save_pretrained` would record that
    class (and copy torch's FSDP files) as the checkpoint's custom code. Under FSDP2 a model of the original
    class on the meta device (no memory) is saved instead, with the weights gathered from the shards.
    Every process must call this (gathering is collective).

    Returns:
        `PreTrainedModel`: The unwrapped model (still sharded under FSDP2).
    """
    unwrapped = accelerator.unwrap_model(model)
    state_dict = accelerator.get_state_dict(model)
    plain = unwrapped
    if isinstance(unwrapped, FSDPModule):
        original_class = next(c for c in type(unwrapped).__mro__ if not issubclass(c, FSDPModule))
        with torch.device("meta"):
            plain = original_class._from_config(unwrapped.config)
    plain.save_pretrained(
        folder, is_main_process=accelerator.is_main_process, save_function=accelerator.save, state_dict=state_dict
    )
    return unwrapped
