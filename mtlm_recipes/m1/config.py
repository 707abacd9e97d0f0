"""The M1 trainer's run config: the sections of its YAML (`examples/m1/*.yaml`) and the checks made before a run.

The YAML is read by `mtlm_recipes.run_config`, so a misspelt key or a bad value at any level is refused with its
section and the nearest valid key. Growth is a `growth_ops.GrowthSpec` under `growth.spec`.
"""

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import mtlm_hf
from growth_ops import GrowthSpec

from ..errors import ConfigError, user_input
from ..run_config import load_run_config


@dataclass
class ModelConfig:
    preset: str = "m1-base"
    overrides: dict = field(default_factory=dict)  # any MTLMConfig field


@dataclass
class TextSource:
    path: str  # Hub dataset id ("HuggingFaceFW/fineweb-edu") or a local file / glob
    weight: float = 1.0  # relative sampling probability in the blend
    name: str | None = None  # Hub config name ("sample-10BT")
    split: str = "train"
    text_field: str = "text"


@dataclass
class DataConfig:
    train: list[TextSource] = field(default_factory=list)
    validation: list[TextSource] = field(default_factory=list)  # empty: hold out `val_blocks` of train
    streaming: bool = False
    seq_len: int = 1024  # tokens per block
    val_blocks: int = 64


@dataclass
class GrowthConfig:
    at_step: int | None = None  # optimizer step at which to grow; None trains without growth
    spec: GrowthSpec = field(default_factory=lambda: GrowthSpec(depth=2, depth_method="stack"))
    optimizer_state: Literal["copy", "reset"] = "copy"  # "copy": new layers take their source's Adam moments
    schedule: Literal["continue", "rewarm"] = "continue"  # "rewarm": warm the LR up again over `rewarm_steps`
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
    mixed_precision: Literal["no", "bf16"] = "no"
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


def load_config(path: str | Path) -> RunConfig:
    """Read an M1 run config (YAML); see `mtlm_recipes.run_config.load_run_config` for the errors."""
    return load_run_config(path, RunConfig)


def build_model_config(cfg: RunConfig) -> mtlm_hf.MTLMConfig:
    """The base model's config from `model.preset` and `model.overrides`, checked against the run.

    Raises:
        ConfigError: If the preset or an override is unknown or invalid, or the run cannot fit the model
            (blocks longer than its context, growth outside the run).
    """
    with user_input("model"):
        model_config = mtlm_hf.MTLMConfig.from_preset(cfg.model.preset, **cfg.model.overrides)
    if cfg.data.seq_len > model_config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_position_embeddings "
            f"({model_config.max_position_embeddings}): lower seq_len or raise max_position_embeddings."
        )
    at = cfg.growth.at_step
    if at is not None and not 0 < at < cfg.training.total_steps:
        raise ConfigError(
            f"growth.at_step ({at}) must lie inside the run, in [1, {cfg.training.total_steps - 1}] "
            f"(training.total_steps is {cfg.training.total_steps})."
        )
    if at is not None:
        with user_input("growth.spec"):  # fails now, not at the growth step halfway through the run
            cfg.growth.spec.plan_depth(model_config.num_hidden_layers)
    return model_config
