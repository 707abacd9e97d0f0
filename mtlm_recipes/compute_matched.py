"""Compute-matched training on real text: the pieces `examples/quickstart.py` and
`benchmarks/growth_speedup.py` share, so that both count, train and compare the same way.

A run trains one M1-style MTLM until it has spent a budget of training FLOPs, optionally growing it
part-way as a `growth_ops.GrowthSpec` says, and records validation loss against FLOPs spent.
FLOPs are counted as `mtlm_recipes.flops.FLOP_FORMULA` says (the formula of ../shared/GROWTH_STUDY.md), the small
model's FLOPs included in a grown run, so runs of different sizes compare at equal compute.
"""

import hashlib
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields
from dataclasses import field as dataclass_field
from functools import cached_property
from pathlib import Path

import torch
from datasets import load_dataset
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
from transformers import AutoModelForCausalLM, PreTrainedTokenizerFast

import mtlm_hf
from growth_ops import GrowthSpec, grow
from growth_ops.midrun import TrainingGrowth

from .errors import ConfigError, InputFileError
from .flops import flops_per_token
from .packing import pack_texts
from .progress import show_step, training_bar
from .training_log import log_step

# The embedded corpus of the checkout (the recipes run from a clone of the repository).
DATA_DIR = Path(__file__).resolve().parents[1] / "examples" / "data" / "shakespeare"
NOVELS_DIR = DATA_DIR.parent / "novels"  # Austen and Hardy: more real text for the larger study sizes


@dataclass
class ComputeMatchedConfig:
    # The quickstart's defaults: its three runs, evaluation and card in about 4 minutes on 2 CPU cores.
    vocab_size: int = 4096  # byte-level BPE trained on the training split
    hidden_size: int = 128
    intermediate_size: int = 256  # M1's rule: 5/3 of the hidden size, rounded up to a multiple of 256
    num_attention_heads: int = 4
    small_layers: int = 3  # grown x2 to 6
    seq_len: int = 128  # tokens per block
    batch_size: int = 16  # blocks per step
    scratch_steps: int = 100  # steps of the big model from scratch; fixes the FLOP budget
    grow_at: float = 0.4  # fraction of the FLOP budget spent on the small model before growth
    lr: float = 2e-3
    warmup_steps: int = 10
    eval_points: int = 8  # validation evaluations per run
    eval_blocks: int = 48  # validation blocks per evaluation
    seed: int = 0

    def __post_init__(self):
        """Refuse a setting no run can train with (from the command line), naming it."""
        for field in fields(self):
            value = getattr(self, field.name)
            if field.type is int and field.name != "seed" and value < 1:
                raise ConfigError(f"--{field.name.replace('_', '-')} must be at least 1, got {value}.")
        if not 0 < self.grow_at < 1:
            raise ConfigError(
                f"--grow-at must lie strictly between 0 and 1 (a share of the budget), got {self.grow_at}."
            )
        if self.hidden_size % self.num_attention_heads:
            raise ConfigError(
                f"--hidden-size ({self.hidden_size}) must divide by --num-attention-heads ({self.num_attention_heads})."
            )


# What the optimizer knows after growth: "fresh" is a new AdamW (no moments), "copy" and "reset" carry the
# training state through growth_ops' `TrainingGrowth` (new layers start from their source's moments, or zeros).
OPTIMIZER_AFTER_GROWTH = ("fresh", "copy", "reset")


@dataclass(frozen=True)
class Growth:
    """When and how a run grows: by `spec` once `at` of the FLOP budget is spent, the optimizer as `optimizer` says."""

    spec: GrowthSpec
    at: float  # fraction of the FLOP budget spent on the small model before growth
    optimizer: str = "fresh"  # one of OPTIMIZER_AFTER_GROWTH

    def __post_init__(self):
        if self.optimizer not in OPTIMIZER_AFTER_GROWTH:
            raise ConfigError(
                f"optimizer after growth must be one of {OPTIMIZER_AFTER_GROWTH}, got {self.optimizer!r}."
            )

    def to_dict(self) -> dict:
        """The record of the growth in a results JSON: its method, when, the optimizer after it, and the whole spec."""
        return {
            "method": "width" if self.spec.grows_width else self.spec.depth_method,
            "at": self.at,
            "optimizer": self.optimizer,
            "spec": self.spec.to_dict(),
        }

    def apply(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, lr: float) -> torch.optim.Optimizer:
        """Grow `model` in place and return the optimizer that trains it on."""
        if self.optimizer == "fresh":
            grow(model, self.spec)
            return make_optimizer(model, lr)  # a fresh optimizer knows the new layers
        return TrainingGrowth(model, optimizer, self.spec, optimizer_state=self.optimizer).apply()


@dataclass
class Corpus:
    tokenizer: PreTrainedTokenizerFast
    train: torch.Tensor  # (blocks, seq_len) token ids of the training split
    val: torch.Tensor  # (eval_blocks, seq_len) token ids of the held-out split
    val_texts: list[str] = dataclass_field(default_factory=list)  # the held-out documents, whole
    val_titles: list[str] = dataclass_field(default_factory=list)  # their titles

    @property
    def vocab_size(self) -> int:
        return len(self.tokenizer)

    @cached_property
    def fingerprint(self) -> str:
        """The sha256 of the training tokens: whether two runs trained on the same text, tokenized the same way.
        Computed once: every run a study looks up or caches is keyed by it."""
        return hashlib.sha256(self.train.numpy().tobytes()).hexdigest()

    def summary(self) -> dict:
        """What a report records of the corpus."""
        return {
            "train_tokens": self.train.numel(),
            "train_sha256": self.fingerprint,
            "validation_tokens_per_evaluation": self.val.numel(),
            "vocab_size": self.vocab_size,
        }


def train_tokenizer(texts: list[str], vocab_size: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE over the training split: a 32k vocabulary would dominate a model this small."""
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=["<unk>", "<s>", "</s>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    backend.train_from_iterator(texts, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>")


def load_corpus(cfg: ComputeMatchedConfig, data_dir: Path | Sequence[Path] = DATA_DIR) -> Corpus:
    """Train the tokenizer on the training split and pack both splits into blocks.

    Args:
        cfg (`ComputeMatchedConfig`): Gives the vocabulary size, block length and validation blocks kept.
        data_dir (`Path` or a sequence of them, *optional*, defaults to the embedded Shakespeare corpus): Folders
            holding `train.jsonl.gz` and `validation.jsonl.gz`, one document a line with a `"text"` field. With
            several, their training splits are joined and each gives an equal share of the validation blocks, so
            the loss measures every kind of text trained on, not only the first folder's.

    Returns:
        `Corpus`: The tokenizer and both splits as token blocks.

    Raises:
        InputFileError: If a split is missing from a folder.
    """
    folders = [Path(data_dir)] if isinstance(data_dir, (str, Path)) else [Path(d) for d in data_dir]
    files = [{split: folder / f"{split}.jsonl.gz" for split in ("train", "validation")} for folder in folders]
    missing = [str(path) for split_files in files for path in split_files.values() if not path.is_file()]
    if missing or not folders:
        raise InputFileError(
            f"{', '.join(missing) or 'no corpus folder given'}: a corpus folder needs train.jsonl.gz and "
            'validation.jsonl.gz with one {"text": ...} document per line (see examples/data/shakespeare/).'
        )
    parts = [load_dataset("json", data_files={split: str(path) for split, path in f.items()}) for f in files]
    train_texts = [text for part in parts for text in part["train"]["text"]]
    tokenizer = train_tokenizer(train_texts, cfg.vocab_size)
    train = torch.from_numpy(pack_texts(train_texts, tokenizer, cfg.seq_len))
    val_blocks, val_texts, val_titles = [], [], []
    for index, part in enumerate(parts):
        validation = part["validation"]
        share = cfg.eval_blocks // len(parts) + (index < cfg.eval_blocks % len(parts))
        val_blocks.append(torch.from_numpy(pack_texts(list(validation["text"]), tokenizer, cfg.seq_len))[:share])
        val_texts += validation["text"]
        val_titles += validation["title"] if "title" in validation.column_names else []
    return Corpus(tokenizer, train, torch.cat(val_blocks), val_texts, val_titles)


def build_model(cfg: ComputeMatchedConfig, num_layers: int, vocab_size: int) -> torch.nn.Module:
    config = mtlm_hf.MTLMConfig.from_preset(
        "m1-base",
        vocab_size=vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_attention_heads=cfg.num_attention_heads,
        num_hidden_layers=num_layers,
        max_position_embeddings=cfg.seq_len,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=2,
    )
    return AutoModelForCausalLM.from_config(config)


def flop_budget(cfg: ComputeMatchedConfig, num_layers: int, vocab_size: int) -> float:
    """The budget every run spends: `cfg.scratch_steps` training steps of a `num_layers`-layer model."""
    return cfg.scratch_steps * cfg.batch_size * cfg.seq_len * flops_per_token(build_model(cfg, num_layers, vocab_size))


def make_optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    """AdamW as the original M1: betas (0.9, 0.95), weight decay on 2-D weights only."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    groups = [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.95), eps=1e-8)


def get_lr(progress: float, step: int, cfg: ComputeMatchedConfig) -> float:
    """Linear warmup, then cosine from lr to 0.1 x lr over the FLOP budget (`progress` in [0, 1])."""
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


@torch.no_grad()
def evaluate(model: torch.nn.Module, blocks: torch.Tensor, batch_size: int, bf16: bool = False) -> float:
    model.eval()
    device = model.device
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
        losses = [model(batch, labels=batch).loss.item() for batch in blocks.split(batch_size)]
    model.train()
    return sum(losses) / len(losses)


def train_compute_matched(
    name: str,
    cfg: ComputeMatchedConfig,
    corpus: Corpus,
    num_layers: int,
    budget: float,
    growth: Growth | None = None,
    device: str = "cpu",
    bf16: bool = False,
    log_dir: Path | None = None,
) -> tuple[dict, torch.nn.Module]:
    """Train a `num_layers`-layer model (grown as `growth` says, if given) until it has spent `budget` FLOPs.

    Every run with the same `cfg.seed` starts from the same initial weights for its size and draws
    the same sequence of training batches, so runs pair up seed by seed.

    Args:
        name (`str`): Label of the run in the log, the results and the plot.
        cfg (`ComputeMatchedConfig`): Model shape and optimisation settings (`cfg.grow_at` is not read).
        corpus (`Corpus`): Training and validation blocks.
        num_layers (`int`): Layers of the model at the start of the run.
        budget (`float`): Training FLOPs to spend; the run stops at the first step that reaches it.
        growth (`Growth`, *optional*): Grow once by `growth.spec` when `growth.at * budget` FLOPs are
            spent; the optimizer then goes on as `growth.optimizer` says (fresh, or carried by growth_ops).
        device (`str`, *optional*, defaults to `"cpu"`): Where the model trains (`"cuda"` on a GPU).
        bf16 (`bool`, *optional*, defaults to `False`): Train and evaluate under bfloat16 autocast.
        log_dir (`Path`, *optional*): Append every step's training loss and time to the loss log
            (`train_losses.jsonl`, `mtlm_recipes.training_log`) in this folder.

    Returns:
        `tuple[dict, torch.nn.Module]`: The record of the run (every validation point as training
        FLOPs and loss, the step and loss jump at growth) and the trained model.
    """
    torch.manual_seed(cfg.seed)
    model = build_model(cfg, num_layers, corpus.vocab_size).to(device).train()
    val = corpus.val.to(device)
    tokens_per_step = cfg.batch_size * cfg.seq_len
    optimizer = make_optimizer(model, cfg.lr)
    generator = torch.Generator().manual_seed(cfg.seed)
    eval_every = budget / cfg.eval_points
    spent, step, next_eval, grown_at, grown_at_step = 0.0, 0, 0.0, None, None
    points, loss_before_growth, growth_jump = [], None, None
    start = time.time()
    bar = training_bar(name, budget, unit="FLOP")
    while spent < budget:
        if spent >= next_eval:
            points.append({"flops": spent, "val_loss": evaluate(model, val, cfg.batch_size, bf16), "step": step})
            next_eval += eval_every
        if growth is not None and grown_at is None and spent >= growth.at * budget:
            # Growth #
            loss_before_growth = evaluate(model, val, cfg.batch_size, bf16)
            optimizer = growth.apply(model, optimizer, cfg.lr)
            growth_jump = evaluate(model, val, cfg.batch_size, bf16) - loss_before_growth
            grown_at, grown_at_step = spent, step
        step_started = time.perf_counter()
        batch = corpus.train[torch.randint(len(corpus.train), (cfg.batch_size,), generator=generator)].to(device)
        for group in optimizer.param_groups:
            group["lr"] = get_lr(spent / budget, step, cfg)
        with torch.autocast(model.device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = model(batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        step_flops = tokens_per_step * flops_per_token(model)
        spent += step_flops
        step += 1
        step_seconds, loss_value = time.perf_counter() - step_started, loss.item()
        if log_dir is not None:
            log_step(log_dir, step, loss_value, step_seconds)
        # The last step overshoots the budget: the bar stops at it, so it ends at 100%.
        show_step(bar, loss_value, tokens_per_step / step_seconds, min(step_flops, budget - bar.n), step=str(step))
    bar.close()
    points.append({"flops": spent, "val_loss": evaluate(model, val, cfg.batch_size, bf16), "step": step})
    print(f"{name:>28}: {step} steps, final val loss {points[-1]['val_loss']:.3f} ({time.time() - start:.0f} s)")
    result = {
        "name": name,
        "layers_final": model.config.num_hidden_layers,
        "parameters_final": sum(p.numel() for p in model.parameters()),
        "tokens": step * tokens_per_step,
        "points": points,
        "grown_at_flops": grown_at,
        "grown_at_step": grown_at_step,
        "loss_jump_at_growth": growth_jump,
    }
    return result, model


def flops_to_reach(points: list[dict], target: float) -> float | None:
    """Training FLOPs at which validation loss first reaches `target` (linear interpolation)."""
    for previous, point in zip(points, points[1:], strict=False):
        if point["val_loss"] <= target:
            span = previous["val_loss"] - point["val_loss"]
            frac = 1.0 if span <= 0 else (previous["val_loss"] - target) / span
            return previous["flops"] + frac * (point["flops"] - previous["flops"])
    return None


def plot_loss_vs_flops(
    runs: list[dict], title: str, path: Path, target: float | None = None, zoom_from: float | None = None
) -> None:
    """Validation loss against training FLOPs, one line per run, a dotted line at each growth step (in its run's colour).

    A run that carries `val_loss_min` and `val_loss_max` (one value per point, e.g. over seeds) is
    drawn with that band around its line; `target`, if given, is drawn as a dashed horizontal line.
    With `zoom_from` (a fraction of the budget), a second panel shows the end of the budget, where
    the final losses of the runs differ by less than the first panel can show.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2 if zoom_from is not None else 1, figsize=(12 if zoom_from is not None else 7, 4.5))
    axes = list(axes) if zoom_from is not None else [axes]
    end = max(p["flops"] for run in runs for p in run["points"])
    for panel, ax in enumerate(axes):
        start = zoom_from * end if panel else 0.0
        shown = []
        for run in runs:
            kept = [i for i, p in enumerate(run["points"]) if p["flops"] >= start]
            xs = [run["points"][i]["flops"] for i in kept]
            ys = [run["points"][i]["val_loss"] for i in kept]
            shown += ys if panel else ys[1:]
            (line,) = ax.plot(xs, ys, marker="o", ms=3, label=run["name"])
            if "val_loss_min" in run:
                low, high = [run["val_loss_min"][i] for i in kept], [run["val_loss_max"][i] for i in kept]
                ax.fill_between(xs, low, high, color=line.get_color(), alpha=0.2)
                shown += low + high if panel else []
            if run["grown_at_flops"] is not None and run["grown_at_flops"] >= start:
                first = not any(drawn.get_label().startswith("growth step") for drawn in ax.get_lines())
                label = "growth step (dotted, in its run's colour)" if first else None
                ax.axvline(run["grown_at_flops"], ls=":", c=line.get_color(), label=label)
        if target is not None:
            ax.axhline(target, ls="--", c="black", lw=0.8, label="scratch's final loss (mean)")
        ax.set_xlabel("training FLOPs (6 N T, small model's FLOPs included)")
        ax.set_ylabel("validation loss (held-out plays)")
        if panel:
            ax.set_title(f"the last {1 - zoom_from:.0%} of the budget, seeds' min-max as bands", fontsize=9)
            ax.set_ylim(min(shown) - 0.01, max(shown) + 0.01)
        else:
            ax.set_title(title, fontsize=9)
            ax.set_ylim(top=min(max(shown) + 0.2, 9))
            ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
