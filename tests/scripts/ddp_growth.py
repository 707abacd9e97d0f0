"""Train a tiny MTLM under DDP, grow it mid-run with `grow_prepared`, and dump what tests/test_growth_ddp.py checks.

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/scripts/ddp_growth.py OUT_DIR

(tests/scripts/_launch.py says why this form.)

The loop is examples/m1/train.py's (gradient accumulation, scheduler stepped once per optimizer step,
AdamW with a weight-decay split, transformers' cosine schedule). Each rank draws different tokens, so
gradients differ between ranks unless DDP all-reduces them. At the growth step each rank writes to
`OUT_DIR/rank{r}.safetensors`:

- `local.{name}`: the new layers' gradients of that step's micro-batches, accumulated without
  synchronisation (`no_sync`): what each rank computes on its own;
- `synced.{name}`: the same micro-batches through the normal accumulate loop, read at the
  synchronising micro-step before `optimizer.step()`: what DDP made of them;
- `grown.{name}`: the new layers' parameters right after growth;
- `param.{name}`: every parameter at the end of the run;
- `losses`: the rank's local loss of every micro-batch.
"""

import sys
from pathlib import Path

import torch
from _tiny_training import ACCUM, GROW_AT, NEW_LAYERS, SPEC, TOTAL_STEPS, optimizer_and_schedule, tiny_model
from accelerate import Accelerator
from accelerate.utils import DistributedType
from safetensors.torch import save_file

from growth_ops import grow_prepared
from mtlm_recipes.m1.distributed import end_training


def main() -> None:
    out = Path(sys.argv[1])
    accelerator = Accelerator(gradient_accumulation_steps=ACCUM, step_scheduler_with_optimizer=False)
    if accelerator.distributed_type != DistributedType.MULTI_CPU or accelerator.num_processes != 2:
        raise SystemExit(f"needs 2 CPU processes, got {accelerator.num_processes} ({accelerator.distributed_type})")
    model = tiny_model()
    optimizer, scheduler = optimizer_and_schedule(model)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    tokens = torch.Generator().manual_seed(1000 + accelerator.process_index)  # different data on every rank
    vocab = accelerator.unwrap_model(model).config.vocab_size

    dump, losses = {}, []
    for step in range(TOTAL_STEPS):
        batches = [torch.randint(0, vocab, (4, 16), generator=tokens) for _ in range(ACCUM)]
        if step == GROW_AT:
            model, optimizer, scheduler = grow_prepared(accelerator, model, optimizer, scheduler, SPEC)
            dump.update({f"grown.{n}": p.detach().clone() for n, p in _new_parameters(accelerator, model)})
            with accelerator.no_sync(model):
                for ids in batches:
                    accelerator.backward(model(ids, labels=ids).loss)
            dump.update({f"local.{n}": p.grad.clone() for n, p in _new_parameters(accelerator, model)})
            accelerator.unwrap_model(model).zero_grad(set_to_none=True)
        for ids in batches:
            with accelerator.accumulate(model):
                loss = model(ids, labels=ids).loss
                accelerator.backward(loss)
                if step == GROW_AT and accelerator.sync_gradients:
                    dump.update({f"synced.{n}": p.grad.clone() for n, p in _new_parameters(accelerator, model)})
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            losses.append(loss.item())
        scheduler.step()

    unwrapped = accelerator.unwrap_model(model)
    dump.update({f"param.{n}": p.detach().clone() for n, p in unwrapped.named_parameters()})
    dump["losses"] = torch.tensor(losses)
    dump["num_layers"] = torch.tensor(unwrapped.config.num_hidden_layers)
    save_file({k: v.contiguous() for k, v in dump.items()}, out / f"rank{accelerator.process_index}.safetensors")
    accelerator.wait_for_everyone()
    del model  # the DDP wrapper, freed before the process group (see end_training)
    end_training(accelerator)


def _new_parameters(accelerator: Accelerator, model: torch.nn.Module) -> list[tuple[str, torch.Tensor]]:
    return [(n, p) for n, p in accelerator.unwrap_model(model).named_parameters() if n.startswith(NEW_LAYERS)]


if __name__ == "__main__":
    main()
