"""Train MTLM1 as its card describes: a base model, grown in depth mid-run, trained on.

    accelerate launch examples/m1/train.py --config examples/m1/smoke.yaml          # CPU, about a minute
    ACCELERATE_USE_CPU=true accelerate launch --multi_gpu --num_processes 2 examples/m1/train.py \
        --config examples/m1/smoke.yaml                          # 2 CPU processes (DDP over gloo)
    accelerate launch --mixed_precision bf16 examples/m1/train.py --config examples/m1/m1.yaml

Phases come from the config: train the base for `growth.at_step` optimizer steps, grow it
(`growth.method`, `growth.factor`), train on to `training.total_steps`. A run resumes from the
newest complete checkpoint in its output folder, also across the growth step, and continues
exactly as an uninterrupted run would. (On accelerate 1.15, `accelerate launch --cpu --num_processes 2`
starts a single process: the `--multi_gpu` form above is the one that starts two on CPU.)
"""

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import yaml
from accelerate import Accelerator
from accelerate.utils import ProjectConfiguration, set_seed
from checkpoints import architecture_of, check_architecture, complete_checkpoints, read_state, save_checkpoint
from data import BlockSampler, DataConfig, TextSource, load_training_data
from tqdm.auto import tqdm
from transformers import AutoModelForCausalLM, get_cosine_with_min_lr_schedule_with_warmup

import mtlm_hf
from growth_ops import grow_depth, grow_prepared, rewarm_schedule

# Dense bf16 peak of the GPUs people train this on, for the MFU estimate (TFLOP/s).
PEAK_TFLOPS = {"A100": 312.0, "H100": 989.0, "H200": 989.0, "L4": 121.0, "A10G": 125.0}


@dataclass
class ModelConfig:
    preset: str = "m1-base"
    overrides: dict = field(default_factory=dict)  # any MTLMConfig field


@dataclass
class GrowthConfig:
    at_step: int | None = None  # optimizer step at which to grow; None trains without growth
    method: str = "stack"
    factor: float = 2.0
    optimizer_state: str = "copy"  # "copy": new layers take their source's Adam moments; "reset": zeros
    schedule: str = "continue"  # "continue" the LR schedule, or "rewarm" over `rewarm_steps`
    rewarm_steps: int = 100


@dataclass
class TrainingConfig:
    total_steps: int = 1000  # optimizer steps
    batch_size: int = 8  # blocks per process per micro-step
    grad_accum: int = 8
    lr: float = 7e-4
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 300
    weight_decay: float = 0.01  # on 2-D weights only (embeddings included, norms and biases excluded)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"  # "no" or "bf16"
    seed: int = 42
    log_every: int = 10
    eval_every: int = 200
    checkpoint_every: int = 500
    keep_checkpoints: int = 2
    peak_tflops: float | None = None  # accelerator peak for MFU; looked up for known GPUs


@dataclass
class RunConfig:
    output_dir: str = "runs/m1"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    growth: GrowthConfig = field(default_factory=GrowthConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def load_config(path: Path) -> RunConfig:
    raw = yaml.safe_load(Path(path).read_text()) or {}
    data = dict(raw.get("data", {}))
    for split in ("train", "validation"):
        data[split] = [TextSource(**source) for source in data.get(split, [])]
    training = dict(raw.get("training", {}))
    if "betas" in training:
        training["betas"] = tuple(training["betas"])
    return RunConfig(
        output_dir=raw.get("output_dir", RunConfig.output_dir),
        model=ModelConfig(**raw.get("model", {})),
        data=DataConfig(**data),
        growth=GrowthConfig(**raw.get("growth", {})),
        training=TrainingConfig(**training),
    )


def validate(cfg: RunConfig, model_config) -> None:
    """Refuse impossible runs before anything is written."""
    if cfg.data.seq_len > model_config.max_position_embeddings:
        raise ValueError(
            f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_position_embeddings "
            f"({model_config.max_position_embeddings}): lower seq_len or raise max_position_embeddings."
        )
    at = cfg.growth.at_step
    if at is not None and not 0 < at < cfg.training.total_steps:
        raise ValueError(
            f"growth.at_step ({at}) must lie inside the run, in [1, {cfg.training.total_steps - 1}] "
            f"(training.total_steps is {cfg.training.total_steps})."
        )


def make_optimizer(model: torch.nn.Module, t: TrainingConfig) -> torch.optim.AdamW:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [{"params": decay, "weight_decay": t.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=t.lr, betas=t.betas, eps=t.eps)


def flops_per_token(model: torch.nn.Module) -> int:
    """6N of the non-embedding parameters plus the output projection (the card's MFU convention)."""
    config = model.config
    non_embedding = sum(p.numel() for p in model.parameters()) - config.vocab_size * config.hidden_size
    if not config.tie_word_embeddings:
        non_embedding -= config.vocab_size * config.hidden_size
    return 6 * (non_embedding + config.hidden_size * config.vocab_size)


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


def training_metadata(
    cfg: RunConfig, accelerator: Accelerator, tokens_per_step: int, loss_log: Path, layers: tuple[int, int]
) -> dict:
    """The training metadata that `hub_cards/build_card.py` reads, from this run's loss log.

    Steps logged twice (the tail of an interrupted run, trained again after resuming) count once, at
    their last time: the time is the sum of the optimizer steps' wall time over all sessions, without
    evaluation, checkpointing or start-up.
    """
    steps = {}
    for line in loss_log.read_text().splitlines():
        record = json.loads(line)
        steps[record["step"]] = record.get("seconds", 0.0)
    metadata = {
        "tokens_trained": tokens_per_step * len(steps),
        "hardware": describe_hardware(accelerator),
        "training_time_hours": sum(steps.values()) / 3600,
        "framework": f"PyTorch {torch.__version__} + Accelerate",
        "precision": "bf16 autocast" if cfg.training.mixed_precision == "bf16" else "fp32",
        "steps": len(steps),
        "tokens_per_step": tokens_per_step,
        "loss_log": loss_log.name,
        "command": " ".join(["accelerate launch", *sys.argv]),
    }
    if cfg.growth.at_step is not None:
        metadata["growth"] = {
            "at_step": cfg.growth.at_step,
            "from_layers": layers[0],
            "to_layers": layers[1],
            "method": cfg.growth.method,
        }
    return metadata


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

    model_config = mtlm_hf.MTLMConfig.from_preset(cfg.model.preset, **cfg.model.overrides)
    validate(cfg, model_config)
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
        log_with="tensorboard",
        project_config=ProjectConfiguration(project_dir=str(out), logging_dir=str(out / "logs")),
    )
    tokenizer = mtlm_hf.mistral_tokenizer()
    tokenizer.pad_token = tokenizer.eos_token  # as the original: no pad token of its own
    with accelerator.main_process_first():  # the others then read the tokenized blocks from the datasets cache
        blocks, val = load_training_data(cfg.data, tokenizer, t.seed)
    sampler = BlockSampler(blocks, t.batch_size * accelerator.num_processes, t.seed)
    accelerator.register_for_checkpointing(sampler)
    set_seed(t.seed)

    model = AutoModelForCausalLM.from_config(model_config)
    start_step = resume_state["step"] if resume_state else 0
    if resume_state and g.at_step is not None and start_step >= g.at_step:
        grow_depth(model, factor=g.factor, method=g.method)  # the checkpoint holds the grown model
    if resume_state:
        check_architecture(resume_state, architecture_of(model.config), checkpoint)
    optimizer = make_optimizer(model, t)
    scheduler = get_cosine_with_min_lr_schedule_with_warmup(
        optimizer, t.warmup_steps, t.total_steps, min_lr_rate=t.min_lr_ratio
    )
    if resume_state and g.schedule == "rewarm" and g.at_step is not None and start_step >= g.at_step:
        scheduler = rewarm_schedule(scheduler, g.at_step, g.rewarm_steps)  # as grow_prepared left it
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    if resume_state:
        accelerator.load_state(str(checkpoint))
        accelerator.print(f"resumed from {checkpoint} at step {start_step}")
    accelerator.init_trackers("m1", config={k: str(v) for k, v in asdict(cfg).items()})

    peak = peak_flops(accelerator, t.peak_tflops)
    tokens_per_step = t.batch_size * t.grad_accum * accelerator.num_processes * cfg.data.seq_len
    rank_rows = slice(accelerator.process_index * t.batch_size, (accelerator.process_index + 1) * t.batch_size)
    end_step = min(t.total_steps, args.stop_after or t.total_steps)
    progress = tqdm(range(start_step, end_step), disable=not accelerator.is_local_main_process)
    for step in progress:
        if step == g.at_step:
            # Growth #
            model, optimizer, scheduler = grow_prepared(
                accelerator,
                model,
                optimizer,
                scheduler,
                factor=g.factor,
                method=g.method,
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
        if accelerator.is_main_process:
            with (out / "train_losses.jsonl").open("a") as log:
                log.write(json.dumps({"step": step + 1, "loss": loss_value, "seconds": step_seconds}) + "\n")
        tokens_per_second = tokens_per_step / step_seconds
        mfu = tokens_per_second * flops_per_token(accelerator.unwrap_model(model)) / peak if peak else None
        progress.set_postfix(
            loss=f"{loss_value:.3f}", tok_s=f"{tokens_per_second:,.0f}", mfu=f"{mfu:.1%}" if mfu else "n/a"
        )
        done = step + 1
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

    accelerator.wait_for_everyone()
    if end_step < t.total_steps:
        accelerator.print(f"stopped after step {end_step}; the same command without --stop-after resumes the run")
        accelerator.end_training()
        return
    final = accelerator.unwrap_model(model)
    final.save_pretrained(out / "final", is_main_process=accelerator.is_main_process, save_function=accelerator.save)
    if accelerator.is_main_process:
        tokenizer.save_pretrained(out / "final")
        layers = (base_layers, final.config.num_hidden_layers)
        metadata = training_metadata(cfg, accelerator, tokens_per_step, out / "train_losses.jsonl", layers)
        (out / "training.json").write_text(json.dumps(metadata, indent=2) + "\n")
    accelerator.end_training()
    accelerator.print(f"final model: {out / 'final'} (loads with trust_remote_code=True)")


if __name__ == "__main__":
    main()
