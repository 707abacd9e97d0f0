"""Peak memory per rank while `grow_prepared` grows an FSDP2-sharded model mid-run, on 2 CPU processes.

    python benchmarks/grow_fsdp_memory.py      # launches itself on 2 processes, writes grow_fsdp_memory.json

An MTLM of 8 layers (hidden 512, the Mistral vocabulary) trains one AdamW step under FSDP2 (gloo, through
`accelerate launch --config_file examples/m1/fsdp.yaml`), then grows to 16 layers by stacking (`ranks`), and
in a second run widens x2 instead (hidden 1024, `width.ranks`: each tensor is gathered on its own, widened
and split again, so the largest gathered tensor and its widened copy come on top of the share). Each rank
reports, in MiB, how far its resident memory rose above where it was before growth at the highest point
during growth, against the sizes growth could cost: this rank's share of the grown training state
(parameters and both Adam moments, `state / world`), one grown layer's state, and the whole grown state (what
gathering the model on one rank would hold). The target (issue 16) is the share plus one layer: the grown
model is built as a new sharded model while the old one is still referenced, so its share is the least a
rise can be; the copies growth makes on the way must stay within about one layer.

How it is measured, and why: torch has no allocation counter for CPU tensors, and tracemalloc sees only
Python's allocator, not tensor storage. Linux keeps the peak resident set size of a process (`VmHWM`), and
writing 5 to `/proc/self/clear_refs` resets it, so the peak of the growth step alone is read. With
`MALLOC_MMAP_THRESHOLD_` fixed at 64 KiB every tensor larger than that gets pages of its own that return to
the system when it is freed, so the resident size follows the tensors alive.
"""

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
MiB = 2**20


def _resident(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


SPECS = {"depth": {"depth": 2, "depth_method": "stack"}, "width": {"width": 2}}


def worker(out: Path, spec_name: str) -> None:
    import gc

    import torch
    from accelerate import Accelerator
    from torch.distributed.tensor import DTensor
    from transformers import AutoModelForCausalLM

    import mtlm_hf
    from growth_ops import GrowthSpec, grow_prepared
    from mtlm_recipes.m1.distributed import enable_fsdp_on_cpu, end_training

    accelerator = Accelerator()
    enable_fsdp_on_cpu(accelerator)
    world = accelerator.num_processes
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset(
        "m1-base", hidden_size=512, intermediate_size=1408, num_hidden_layers=8, num_attention_heads=8
    )
    model = AutoModelForCausalLM.from_config(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model, optimizer = accelerator.prepare(model, optimizer)
    ids = torch.randint(0, config.vocab_size, (1, 32))
    accelerator.backward(model(ids, labels=ids).loss)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)

    def local_bytes(tensors) -> int:
        return sum((t.to_local() if isinstance(t, DTensor) else t).nbytes for t in tensors)

    def global_bytes(tensors) -> int:
        return sum(t.numel() * t.element_size() for t in tensors)  # a DTensor's numel is the global one

    gc.collect()
    accelerator.wait_for_everyone()
    before = _resident("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # VmHWM := VmRSS
    model, optimizer, _ = grow_prepared(accelerator, model, optimizer, None, GrowthSpec(**SPECS[spec_name]))
    peak = _resident("VmHWM")
    layer_state = 3 * global_bytes(accelerator.unwrap_model(model).model.layers[0].parameters())  # weights, 2 moments
    gc.collect()
    after = _resident("VmRSS")
    parameters = list(accelerator.unwrap_model(model).parameters())
    moments = [v for s in optimizer.state.values() for k, v in s.items() if k != "step"]
    grown_state = 3 * global_bytes(parameters)
    report = {
        "rank": accelerator.process_index,
        "peak_rise_during_growth_mib": (peak - before) / MiB,
        "rise_after_growth_mib": (after - before) / MiB,
        "this_rank_grown_state_mib": (local_bytes(parameters) + local_bytes(moments)) / MiB,
        "grown_state_over_world_mib": grown_state / world / MiB,
        "one_layer_state_mib": layer_state / MiB,
        "whole_grown_state_mib": grown_state / MiB,
        "target_mib": (grown_state / world + layer_state) / MiB,
        "within_target": peak - before <= grown_state / world + layer_state,
        "num_layers": accelerator.unwrap_model(model).config.num_hidden_layers,
        "hidden_size": accelerator.unwrap_model(model).config.hidden_size,
    }
    (out / f"{spec_name}_rank{accelerator.process_index}.json").write_text(json.dumps(report))
    del model  # freed before the process group (see end_training)
    end_training(accelerator)


def main() -> None:
    sys.path.insert(0, str(HERE))
    from machine import host

    out = Path(tempfile.mkdtemp(prefix="grow_fsdp_memory_"))
    load = round(os.getloadavg()[0], 2)
    env = {
        **os.environ,
        "ACCELERATE_USE_CPU": "true",
        "OMP_NUM_THREADS": "1",
        "MALLOC_MMAP_THRESHOLD_": str(64 * 1024),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/m1/fsdp.yaml")]
    launch += ["--num_processes", "2", "--main_process_port", "29517", __file__, "--worker", str(out)]
    for spec_name in SPECS:
        subprocess.run([*launch, spec_name], check=True, env=env, cwd=ROOT)
    ranks, width = ([json.loads((out / f"{s}_rank{r}.json").read_text()) for r in range(2)] for s in SPECS)
    result = {
        "what": "peak resident-memory rise per rank while grow_prepared grows an FSDP2 model 8 -> 16 layers "
        "(hidden 512, vocab 32000, fp32, AdamW), 2 CPU processes (gloo)",
        "measured_with": "VmHWM after clear_refs=5, MALLOC_MMAP_THRESHOLD_=65536",
        "machine": host(),
        # Resident memory does not depend on what else runs, but say so: the machine may be shared.
        "load_average_1min_before": load,
        "ranks": ranks,
        "width": {"what": "the same model widened x2 (hidden 1024, heads 16, MLP 2816) instead", "ranks": width},
    }
    (HERE / "grow_fsdp_memory.json").write_text(json.dumps(result, indent=2) + "\n")
    for r in ranks + width:
        print(json.dumps(r))


if __name__ == "__main__":
    if sys.argv[1:2] == ["--worker"]:
        worker(Path(sys.argv[2]), sys.argv[3])
    else:
        main()
