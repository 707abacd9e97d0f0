"""Train a tiny MTLM with `transformers.Trainer` on 2 processes, grow it with `GrowthCallback`, and dump what
tests/growth/test_growth_callback_distributed.py checks.

    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 tests/scripts/trainer_growth.py OUT_DIR \
        [--spec width]
    ACCELERATE_USE_CPU=true accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2 \
        tests/scripts/trainer_growth.py OUT_DIR [--spec width]

Trainer's distributed sampler gives every rank different examples. Each rank writes
`OUT_DIR/rank{r}.safetensors`:

- `grad.{name}`: the new layers' gradients at the first optimizer step after growth, as the optimizer sees
  them (gathered from the shards under FSDP);
- `grown.{name}`: the new layers' parameters right after growth; `param.{name}`: every parameter at the end;
- `losses`: the logged loss of every optimizer step; `num_layers`; `hidden_size`; `sharded` (1 where every
  parameter is a DTensor, under FSDP).

`--spec width` grows width and depth (`_tiny_training.WIDTH_SPEC`) instead of depth only.
"""

import argparse
from pathlib import Path

import torch
from _tiny_training import NEW_LAYERS, SPECS, tiny_model
from safetensors.torch import save_file
from torch.distributed.tensor import DTensor
from transformers import Trainer, TrainerCallback, TrainingArguments

from growth_ops import GrowthCallback
from mtlm_recipes.m1.distributed import enable_fsdp_on_cpu

AT_STEP, MAX_STEPS = 3, 6


class CPUTrainer(Trainer):
    """A Trainer whose accelerator shards under an FSDP config on CPU processes, as on GPUs."""

    def create_accelerator_and_postprocess(self):
        super().create_accelerator_and_postprocess()
        self.is_fsdp_enabled = enable_fsdp_on_cpu(self.accelerator) or self.is_fsdp_enabled


class Recorder(TrainerCallback):
    """The new layers right after growth (the first step of the resumed run) and their first gradients."""

    def __init__(self):
        self.dump = {}

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step == AT_STEP:
            self.dump.update({f"grown.{n}": _full(p) for n, p in _new(model)})

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.global_step == AT_STEP:
            self.dump.update({f"grad.{n}": _full(p.grad) for n, p in _new(model)})


def _new(model: torch.nn.Module) -> list[tuple[str, torch.nn.Parameter]]:
    return [(n, p) for n, p in model.named_parameters() if n.startswith(NEW_LAYERS)]


def _full(tensor: torch.Tensor) -> torch.Tensor:
    return (tensor.full_tensor() if isinstance(tensor, DTensor) else tensor).detach().clone()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--spec", choices=sorted(SPECS), default="depth")
    args = parser.parse_args()
    out = args.out
    model = tiny_model()
    ids = torch.randint(0, model.config.vocab_size, (64, 16), generator=torch.Generator().manual_seed(0))
    data = [{"input_ids": row, "labels": row} for row in ids]
    training_args = TrainingArguments(
        output_dir=str(out / "trainer"),
        max_steps=MAX_STEPS,
        per_device_train_batch_size=2,
        gradient_accumulation_steps=2,
        learning_rate=5e-3,
        warmup_steps=1,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        disable_tqdm=True,
        seed=0,
    )
    growth, recorder = GrowthCallback(at_step=AT_STEP, spec=SPECS[args.spec]), Recorder()
    trainer = CPUTrainer(model=model, args=training_args, train_dataset=data, callbacks=[growth, recorder])
    growth.train(trainer)

    final = trainer.accelerator.unwrap_model(trainer.model_wrapped)
    dump = recorder.dump
    dump.update({f"param.{n}": _full(p) for n, p in final.named_parameters()})
    dump["losses"] = torch.tensor([e["loss"] for e in trainer.state.log_history if "loss" in e], dtype=torch.float64)
    dump["num_layers"] = torch.tensor(final.config.num_hidden_layers)
    dump["hidden_size"] = torch.tensor(final.config.hidden_size)
    dump["sharded"] = torch.tensor(all(isinstance(p, DTensor) for p in final.parameters()))
    save_file({k: v.contiguous() for k, v in dump.items()}, out / f"rank{trainer.args.process_index}.safetensors")
    trainer.accelerator.wait_for_everyone()


if __name__ == "__main__":
    main()
