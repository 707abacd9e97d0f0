"""Train MTLM1 as its card describes: a base model, grown in depth mid-run, trained on.

    accelerate launch examples/m1/train.py --config examples/m1/smoke.yaml          # CPU, about a minute
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 examples/m1/train.py \
        --config examples/m1/smoke.yaml                          # 2 CPU processes (DDP over gloo)
    ACCELERATE_USE_CPU=true accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2 \
        examples/m1/train.py --config examples/m1/smoke.yaml     # 2 CPU processes sharded (FSDP2 over gloo)
    accelerate launch --mixed_precision bf16 examples/m1/train.py --config examples/m1/m1.yaml

Phases come from the config: train the base for `growth.at_step` optimizer steps, grow it as `growth.spec`
says (a `growth_ops.GrowthSpec`, e.g. `{depth: 2, depth_method: stack}`), train on to `training.total_steps`.
A run resumes from the newest complete checkpoint in its output folder, also across the growth step, and
continues exactly as an uninterrupted run would. The config's sections and keys are in
`mtlm_recipes/m1/config.py`; a misspelt key is refused with the nearest valid one. TensorBoard logs go to
`<output_dir>/logs` when tensorboard is installed; the losses always go to `<output_dir>/train_losses.jsonl`.
(On accelerate 1.15, `accelerate launch --cpu --num_processes 2` starts a single process: the `--multi_gpu`
form above is the one that starts two on CPU.)
"""

import argparse
import math
import os
import platform
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, is_tensorboard_available, set_seed
from transformers import AutoModelForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

import mtlm_hf
from growth_ops import grow, grow_prepared, rewarm_schedule
from mtlm_recipes.checkpoint_config import architecture_of, check_architecture
from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.flops import flops_per_token
from mtlm_recipes.m1.checkpoints import complete_checkpoints, read_state, save_checkpoint
from mtlm_recipes.m1.config import TrainingConfig, build_model_config, load_config
from mtlm_recipes.m1.data import BlockSampler, load_training_data
from mtlm_recipes.m1.distributed import enable_fsdp_on_cpu, end_training, save_trained_model
from mtlm_recipes.progress import show_step, training_bar
from mtlm_recipes.training_log import log_step, write_training_metadata

# Dense bf16 peak of the GPUs people train this on, for the MFU estimate (TFLOP/s).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L4": 121.0, "A10G": 125.0}


def make_optimizer(model: torch.nn.Module, t: TrainingConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)


def peak_flops(accelerator: Accelerator, configured: float | None) -> float | None:
    if configured:
        return configured * 1e12
    if accelerator.device.type == "cuda":
        name = torch.cuda.get_device_name(accelerator.device)
        return next((tf * 1e12 for gpu, tf in PEAK_TFLOPS.items() if gpu in name), None)
    return None


@torch.no_grad()
def evaluate(model, accelerator: Accelerator, blocks: torch.Tensor, batch_size: int) -> float:
    """Mean validation loss; each process takes its share of the blocks and the results are averaged."""
    model.eval()
    share = blocks[accelerator.process_index :: accelerator.num_processes]
    losses = torch.stack([model(b, labels=b).loss for b in share.to(accelerator.device).split(batch_size)])
    model.train()
    return accelerator.gather(losses.mean()[None]).mean().item()


def describe_hardware(accelerator: Accelerator) -> str:
    """What the run trained on, as a model card states it ("2x NVIDIA H100 80GB HBM3")."""
    if accelerator.device.type == "cuda":
        return f"{accelerator.num_processes}x {torch.cuda.get_device_name(accelerator.device)}"
    cpu = platform.processor() or platform.machine()
    return f"{accelerator.num_processes} {accelerator.device.type.upper()} process(es) ({cpu}, {os.cpu_count()} cores)"


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--output-dir", type=Path, help="overrides output_dir of the config")
    parser.add_argument("--total-steps", type=int, help="overrides training.total_steps")
    parser.add_argument("--resume", default="auto", help="'auto' (newest checkpoint, if any), 'none', or a path")
    parser.add_argument(
        "--stop-after", type=int, help="stop (with a checkpoint) after this optimizer step; the schedule is unchanged"
    )
    args = parser.parse_args()
    cfg = load_config(args.config)
    if args.output_dir:
        cfg.output_dir = str(args.output_dir)
    if args.total_steps:
        cfg.training.total_steps = args.total_steps
    t, g = cfg.training, cfg.growth
    out = Path(cfg.output_dir)

    model_config = build_model_config(cfg)  # checks the run against the model before anything is written
    base_layers = model_config.num_hidden_layers  # the model shares this config, and growth changes it
    checkpoint = None
    if args.resume == "auto":
        checkpoint = (complete_checkpoints(out / "checkpoints") or [None])[-1]
    elif args.resume != "none":
        checkpoint = Path(args.resume)
    resume_state = read_state(checkpoint) if checkpoint else None

    accelerator = Accelerator(
        gradient_accumulation_steps=t.grad_accum,
        step_scheduler_with_optimizer=False,  # stepped once per optimizer step below, whatever the process count
        mixed_precision=t.mixed_precision,
        log_with="tensorboard" if is_tensorboard_available() else None,
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    enable_fsdp_on_cpu(accelerator)  # an FSDP config on CPU processes (ACCELERATE_USE_CPU) shards as on GPUs
    tokenizer = mtlm_hf.mistral_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as the original: no pad token of its own
    with accelerator.main_process_first():  # the others then read the tokenized blocks from the datasets cache
        blocks, val = load_training_data(cfg.data, tokenizer, t.seed)
    sampler = BlockSampler(blocks, t.batch_size * accelerator.num_processes, t.seed)
    accelerator.register_for_checkpointing(sampler)
    set_seed(t.seed)

    model = AutoModelForCausalLM.from_config(model_config)
    start_step = resume_state["step"] if resume_state else 0
    grown_before_start = resume_state and g.at_step is not None and start_step >= g.at_step
    if grown_before_start:
        grow(model, g.spec)  # the checkpoint holds the grown model
    if resume_state:
        check_architecture(resume_state.get("architecture"), model.config, str(checkpoint))
    optimizer = make_optimizer(model, t)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, t.warmup_steps, t.total_steps, min_lr_rate=t.min_lr_ratio
    )
    if grown_before_start and g.schedule == "rewarm":
        scheduler = rewarm_schedule(scheduler, g.at_step, g.rewarm_steps)  # as grow_prepared left it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if resume_state:
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    if accelerator.is_main_process:
        out.mkdir(parents=True, exist_ok=True)
        if not is_tensorboard_available():
            print(
                "warning: tensorboard is not installed, so no TensorBoard logs are written (pip install tensorboard); "
                f"the losses still go to {out / 'train_losses.jsonl'}",
                file=sys.stderr,
            )
    accelerator.init_trackers("m1", config={k: str(v) for k, v in asdict(cfg).items()})

    peak = peak_flops(accelerator, t.peak_tflops)
    tokens_per_step = t.batch_size * t.grad_accum * accelerator.num_processes * cfg.data.seq_len
    rank_rows = slice(accelerator.process_index * t.batch_size, (accelerator.process_index + 1) * t.batch_size)
    end_step = min(t.total_steps, args.stop_after or t.total_steps)
    bar = training_bar("m1", end_step, initial=start_step, disable=not accelerator.is_local_main_process)
    for step in range(start_step, end_step):
        if step == g.at_step:
            # Growth #
            model, optimizer, scheduler = grow_prepared(
                accelerator,
                model,
                optimizer,
                scheduler,
                g.spec,
                optimizer_state=g.optimizer_state,
                schedule=g.schedule,
                rewarm_steps=g.rewarm_steps,
            )
            accelerator.print(
                f"step {step}: grew to {accelerator.unwrap_model(model).config.num_hidden_layers} layers"
            )
        started = time.perf_counter()
        step_loss = torch.zeros((), device=accelerator.device)
        for _ in range(t.grad_accum):
            batch = sampler.next_batch()[rank_rows].to(accelerator.device)
            with accelerator.accumulate(model):
                loss = model(batch, labels=batch).loss
                accelerator.backward(loss)
                if accelerator.sync_gradients:
                    accelerator.clip_grad_norm_(model.parameters(), t.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            step_loss += loss.detach() / t.grad_accum
        scheduler.step()
        loss_value = accelerator.gather(step_loss[None]).mean().item()
        step_seconds = time.perf_counter() - started
        done = step + 1
        if accelerator.is_main_process:
            log_step(out, done, loss_value, step_seconds)
        tokens_per_second = tokens_per_step / step_seconds
        mfu = tokens_per_second * flops_per_token(accelerator.unwrap_model(model)) / peak if peak else None
        show_step(bar, loss_value, tokens_per_second, mfu=f"{mfu:.1%}" if mfu else "n/a")
        if done % t.log_every == 0 or done == t.total_steps:
            metrics = {
                "train/loss": loss_value,
                "train/lr": scheduler.get_last_lr()[0],
                "perf/tokens_per_s": tokens_per_second,
            }
            if mfu:
                metrics["perf/mfu"] = mfu
            accelerator.log(metrics, step=done)
        if done % t.eval_every == 0 or done == t.total_steps:
            val_loss = evaluate(model, accelerator, val, t.batch_size)
            accelerator.log({"val/loss": val_loss, "val/perplexity": math.exp(min(val_loss, 50))}, step=done)
            accelerator.print(f"step {done}: val loss {val_loss:.4f}")
        if done % t.checkpoint_every == 0 or done == end_step:
            state = {"step": done, "architecture": architecture_of(accelerator.unwrap_model(model).config)}
            save_checkpoint(accelerator, out / "checkpoints", done, state, t.keep_checkpoints)
    bar.close()

    accelerator.wait_for_everyone()
    if end_step < t.total_steps:
        accelerator.print(f"stopped after step {end_step}; the same command without --stop-after resumes the run")
        del model, optimizer, scheduler  # the DDP wrapper is freed before the process group (see end_training)
        end_training(accelerator)
        return
    final = save_trained_model(accelerator, model, out / "final")
    if accelerator.is_main_process:
        tokenizer.save_pretrained(out / "final")
        growth = None
        if g.at_step is not None:
            growth = {
                "at_step": g.at_step,
                "from_layers": base_layers,
                "to_layers": final.config.num_hidden_layers,
                "method": g.spec.plan_depth(base_layers).method,
            }
        write_training_metadata(
            out,
            tokens_per_step=tokens_per_step,
            hardware=describe_hardware(accelerator),
            framework=f"PyTorch {torch.__version__} + Accelerate",
            precision="bf16 autocast" if t.mixed_precision == "bf16" else "fp32",
            command=" ".join(["accelerate launch", *sys.argv]),
            growth=growth,
        )
    del model, optimizer, scheduler
    end_training(accelerator)
    accelerator.print(f"final model: {out / 'final'} (loads with trust_remote_code=True)")


if __name__ == "__main__":
    main()
