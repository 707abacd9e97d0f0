"""Train a tiny MTLM, grow it mid-run with `grow_prepared`, and dump what tests/growth/test_growth_fsdp.py compares.

    # 2 FSDP2 processes on CPU (torchrun through Accelerate; ACCELERATE_USE_CPU gives a gloo group)
    ACCELERATE_USE_CPU=true accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2 \
        tests/scripts/fsdp_growth.py OUT_DIR
    # the same run in 1 plain process
    ACCELERATE_USE_CPU=true python tests/scripts/fsdp_growth.py OUT_DIR

Every process draws the same global batches and trains on its slice of them, so the mean of the
ranks' losses (and of their gradients, which FSDP reduce-scatters) is the one process's. The loop is
examples/m1/train.py's: gradient accumulation, AdamW with a weight-decay split, cosine schedule
stepped once per optimizer step. Rank 0 writes `OUT_DIR/world{N}.safetensors`:

- `losses`: the global loss of every micro-batch;
- `lr`: the learning rate of every optimizer step;
- `param.{name}`: every parameter at the end of the run, gathered;
- `num_layers`; under FSDP, `shards_copied` (1 where every new layer's local shard on every rank
  equals its source's right after growth, with the same placements) and `sharded` (1 where every
  parameter, the new ones included, is a DTensor sharded over both ranks).
"""

import os
import sys
from pathlib import Path

import torch
from accelerate import Accelerator, FullyShardedDataParallelPlugin, PartialState
from accelerate.utils import DistributedType
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor
from transformers import AutoModelForCausalLM
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

import mtlm_hf
from growth_ops import GrowthSpec, grow_prepared

GROW_AT = 2  # optimizer steps before growth
TOTAL_STEPS = 5
ACCUM = 2  # micro-batches per optimizer step
GLOBAL_BATCH = 4
SOURCES = {2: 0, 3: 1}  # stack 2 -> 4: new layer -> its source


def main() -> None:
    out = Path(sys.argv[1])
    accelerator = Accelerator(gradient_accumulation_steps=ACCUM, step_scheduler_with_optimizer=False)
    _fsdp_on_cpu(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset("m1-tiny")
    model = AutoModelForCausalLM.from_config(config)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
    )
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(optimizer, 1, TOTAL_STEPS, min_lr_rate=0.1)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    tokens = torch.Generator().manual_seed(1000)  # the same global batches on every rank
    per_rank = GLOBAL_BATCH // world

    dump, losses, lrs, shards_copied = {}, [], [], True
    for step in range(TOTAL_STEPS):
        batches = [torch.randint(0, config.vocab_size, (GLOBAL_BATCH, 16), generator=tokens) for _ in range(ACCUM)]
        if step == GROW_AT:
            spec = GrowthSpec(depth=2, depth_method="stack")
            model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, spec)
            shards_copied = _new_shards_equal_sources(accelerator.unwrap_model(model))
        for batch in batches:
            ids = batch[rank * per_rank : (rank + 1) * per_rank]
            with accelerator.accumulate(model):
                loss = model(ids, labels=ids).loss
                accelerator.backward(loss)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(accelerator.reduce(loss.detach(), reduction="mean").item())
        lrs.append(scheduler.get_last_lr()[0])
        scheduler.step()

    unwrapped = accelerator.unwrap_model(model)
    sharded = all(
        isinstance(p, DTensor) and p.device_mesh.size() == 2 and p.to_local().shape[0] < p.shape[0]
        for p in unwrapped.parameters()
    )
    flags = torch.tensor([shards_copied, sharded], dtype=torch.int64)
    flags = accelerator.reduce(flags, reduction="sum") if world > 1 else flags * 2  # count ranks where it holds
    state = accelerator.get_state_dict(model)  # gathered on rank 0
    if accelerator.is_main_process:
        dump.update({f"param.{n}": v.detach().clone() for n, v in state.items()})
        dump["losses"] = torch.tensor(losses, dtype=torch.float64)
        dump["lr"] = torch.tensor(lrs, dtype=torch.float64)
        dump["num_layers"] = torch.tensor(unwrapped.config.num_hidden_layers)
        dump["shards_copied"], dump["sharded"] = flags[0], flags[1]
        save_file({k: v.contiguous() for k, v in dump.items()}, out / f"world{world}.safetensors")
    accelerator.wait_for_everyone()
    accelerator.end_training()


def _fsdp_on_cpu(accelerator: Accelerator) -> None:
    """Turn FSDP on for a CPU run, as AcceleratorState does on GPUs.

    Accelerate 1.15 enables FSDP only on accelerator devices: under ACCELERATE_USE_CPU it drops the FSDP
    config without a word and the run is DDP. Torch's FSDP2 runs on CPU with gloo, and `prepare` then
    shards the model through the same code as on GPUs.
    """
    if accelerator.distributed_type == DistributedType.MULTI_CPU and os.environ.get("ACCELERATE_USE_FSDP") == "true":
        # Both shared states: AcceleratorState copies PartialState's whenever it is instantiated again.
        PartialState().distributed_type = accelerator.state.distributed_type = DistributedType.FSDP
        accelerator.state.fsdp_plugin = FullyShardedDataParallelPlugin()  # reads the FSDP_* variables launch sets
    if accelerator.num_processes > 1 and not accelerator.is_fsdp2:
        raise SystemExit(f"needs FSDP2 on {accelerator.num_processes} processes, got {accelerator.distributed_type}")


def _new_shards_equal_sources(model: torch.nn.Module) -> bool:
    """Every new layer's local shard is its source's, placed the same way (and nothing was gathered to get it)."""
    layers = model.model.layers
    for new, source in SOURCES.items():
        pairs = zip(layers[new].parameters(), layers[source].parameters(), strict=True)
        for grown, original in pairs:
            if not isinstance(grown, DTensor):
                return not isinstance(original, DTensor) and torch.equal(grown, original)
            if grown.placements != original.placements or not torch.equal(grown.to_local(), original.to_local()):
                return False
    return True


if __name__ == "__main__":
    main()
