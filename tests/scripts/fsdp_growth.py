"""Train a tiny MTLM, grow it mid-run with `grow_prepared`, and dump what tests/growth/test_growth_fsdp.py
(depth, FSDP2) and tests/growth/test_width_midrun_distributed.py (width and depth, DDP and FSDP2) compare
with 1 process.

    # 2 FSDP2 processes on CPU (torchrun through Accelerate; ACCELERATE_USE_CPU gives a gloo group)
    ACCELERATE_USE_CPU=true accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2 \
        tests/scripts/fsdp_growth.py OUT_DIR [--stop-after STEP] [--resume]
    # 2 DDP processes (or FSDP2 as above), growing width too
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/scripts/fsdp_growth.py OUT_DIR \
        --spec width
    # the same run in 1 plain process
    ACCELERATE_USE_CPU=true python tests/scripts/fsdp_growth.py OUT_DIR [--spec width]

Every process draws the same global batches (those of step s from seed 1000 + s) and trains on its slice of
them, so the mean of the ranks' losses (and of their gradients, which FSDP reduce-scatters) is the one
process's. The loop is examples/m1/train.py's: gradient accumulation, AdamW with a weight-decay split, cosine
schedule stepped once per optimizer step. `--stop-after STEP` ends the run after that optimizer step with
`accelerator.save_state(OUT_DIR/state)` (sharded under FSDP); `--resume` starts from that state, on any
number of processes (the model is grown before `prepare` when the state is from after the growth, as the M1
trainer does). Rank 0 writes `OUT_DIR/world{N}_from{first step}.safetensors`:

- `losses`: the global loss of every micro-batch run;
- `lr`: the learning rate of every optimizer step run;
- `param.{name}`: every parameter at the end of the run, gathered;
- `num_layers`, `hidden_size`; `shards_copied` (under FSDP: 1 where every new layer's local shard on every
  rank equals its source's right after growth, with the same placements) and `sharded` (1 where every
  parameter, the new ones included, is a DTensor sharded over all ranks), as counts of ranks.
"""

import argparse
import json
from pathlib import Path

import torch
from _tiny_training import ACCUM, GROW_AT, SPEC, SPECS, TOTAL_STEPS, optimizer_and_schedule, tiny_model
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor

from growth_ops import grow, grow_prepared
from mtlm_recipes.m1.distributed import enable_fsdp_on_cpu, end_training

GLOBAL_BATCH = 4


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--stop-after", type=int, default=TOTAL_STEPS)
    parser.add_argument("--resume", action="store_true")
    parser.add_argument("--spec", choices=sorted(SPECS), default="depth")
    args = parser.parse_args()
    spec = SPECS[args.spec]
    state_dir, step_file = args.out / "state", args.out / "state_step.json"
    accelerator = Accelerator(gradient_accumulation_steps=ACCUM, step_scheduler_with_optimizer=False)
    enable_fsdp_on_cpu(accelerator)
    world, rank = accelerator.num_processes, accelerator.process_index
    if world > 1 and not (accelerator.is_fsdp2 or accelerator.distributed_type == DistributedType.MULTI_CPU):
        raise SystemExit(f"needs FSDP2 or DDP on {world} processes, got {accelerator.distributed_type}")
    start = json.loads(step_file.read_text())["step"] if args.resume else 0
    model = tiny_model()
    if start > GROW_AT:
        grow(model, spec)  # the saved state holds the grown model
    optimizer, scheduler = optimizer_and_schedule(model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if args.resume:
        accelerator.load_state(str(state_dir))
    per_rank = GLOBAL_BATCH // world
    vocab = accelerator.unwrap_model(model).config.vocab_size

    dump, losses, lrs, shards_copied = {}, [], [], True
    for step in range(start, args.stop_after):
        tokens = torch.Generator().manual_seed(1000 + step)  # the same global batches on every rank
        batches = [torch.randint(0, vocab, (GLOBAL_BATCH, 16), generator=tokens) for _ in range(ACCUM)]
        if step == GROW_AT:
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
    if args.stop_after < TOTAL_STEPS:
        accelerator.save_state(str(state_dir))
        if accelerator.is_main_process:
            step_file.write_text(json.dumps({"step": args.stop_after}))

    unwrapped = accelerator.unwrap_model(model)
    sharded = all(
        isinstance(p, DTensor) and p.device_mesh.size() == world and p.to_local().shape[0] < p.shape[0]
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
        dump["hidden_size"] = torch.tensor(unwrapped.config.hidden_size)
        dump["shards_copied"], dump["sharded"] = flags[0], flags[1]
        save_file({k: v.contiguous() for k, v in dump.items()}, args.out / f"world{world}_from{start}.safetensors")
    accelerator.wait_for_everyone()
    del model  # the DDP wrapper, freed before the process group (see end_training)
    end_training(accelerator)


def _new_shards_equal_sources(model: torch.nn.Module) -> bool:
    """Every new layer's local shard is its source's, placed the same way (and nothing was gathered to get it)."""
    layers, plan = model.model.layers, SPEC.plan_depth(2)
    for new in set(range(plan.num_layers)) - set(plan.kept_positions):
        source = plan.sources[new]
        pairs = zip(layers[new].parameters(), layers[source].parameters(), strict=True)
        for grown, original in pairs:
            if not isinstance(grown, DTensor):
                return not isinstance(original, DTensor) and torch.equal(grown, original)
            if grown.placements != original.placements or not torch.equal(grown.to_local(), original.to_local()):
                return False
    return True


if __name__ == "__main__":
    main()
