"""The M2 trainer's run config: the sections of its YAML (`examples/m2_jax/*.yaml`) and the checks made before a run.

Sections and field names are the M1 trainer's (`mtlm_recipes.m1.config`) wherever the meaning is the same; here
`batch_size` is the global batch and there is no gradient accumulation, as in the original. The YAML is read by
`mtlm_recipes.run_config`, so a misspelt key or a bad value at any level is refused with the nearest valid one.
"""

import argparse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal, get_args

import mtlm_hf

from ..errors import ConfigError, InputFileError, user_input
from ..run_config import load_run_config

EosUnit = Literal["line", "document"]
EOS_UNITS = get_args(EosUnit)


@dataclass
class ModelConfig:
    preset: str = "m2"
    overrides: dict = field(default_factory=dict)  # any MTLMConfig field
    init_from: str | None = None  # an MTLM checkpoint folder to start from (e.g. grown in PyTorch); overrides apply


@dataclass
class TextFile:
    path: str  # a local .txt, .jsonl or .jsonl.gz file, or a glob
    text_field: str = "text"  # the field of each JSON line that holds the text


@dataclass
class DataConfig:
    train: list[TextFile] = field(default_factory=list)
    validation: list[TextFile] = field(default_factory=list)
    seq_len: int = 1024  # tokens per block
    val_blocks: int = 64  # at most this many validation blocks are scored
    eos_per: EosUnit = "line"  # "line" (the original M2) or "document"
    # None: the Mistral tokenizer (32000 pieces, the original's); N: a byte-level BPE of N pieces trained on
    # data.train, for models so small that a 32000-row embedding and head would be most of their weights.
    bpe_vocab_size: int | None = None


@dataclass
class MeshConfig:
    num_devices: int | None = None  # None: every device JAX sees
    shard_params: bool = True  # shard parameters and optimizer moments on their first axis, as the original


@dataclass
class OptimizerConfig:
    total_steps: int = 1000  # optimizer steps; the cosine ends here
    lr: float = 4e-4  # peak learning rate
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    warmup_steps: int = 200  # linear warmup from 0
    weight_decay: float = 0.01  # decoupled, on every parameter (as the original M2)
    betas: tuple[float, float] = (0.9, 0.999)  # optax's defaults, which the original kept
    eps: float = 1e-8
    max_grad_norm: float = 1.0


@dataclass
class TrainingConfig(OptimizerConfig):
    batch_size: int = 256  # blocks per optimizer step, over the whole mesh
    mixed_precision: Literal["no", "bf16"] = "no"  # "bf16": bfloat16 matmuls, float32 parameters (the original)
    seed: int = 0
    log_every: int = 10
    eval_every: int = 500
    checkpoint_every: int = 500
    keep_checkpoints: int = 2


@dataclass
class RunConfig:
    output_dir: str = "runs/m2_jax"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    mesh: MeshConfig = field(default_factory=MeshConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)


def load_config(path: str | Path) -> RunConfig:
    """Read an M2 run config (YAML); see `mtlm_recipes.run_config.load_run_config` for the errors."""
    return load_run_config(path, RunConfig)


def add_run_arguments(parser: argparse.ArgumentParser, default_config: Path) -> None:
    """The options both M2 scripts take: the config file, and where the run goes and how long it is."""
    parser.add_argument("--config", type=Path, default=default_config)
    parser.add_argument("--output-dir", type=Path, help="overrides output_dir of the config")
    parser.add_argument("--total-steps", type=int, help="overrides training.total_steps")


def run_config_of(args: argparse.Namespace) -> RunConfig:
    """The config `add_run_arguments`' options name, with their overrides applied."""
    cfg = load_config(args.config)
    if args.output_dir:
        cfg.output_dir = str(args.output_dir)
    if args.total_steps:
        cfg.training.total_steps = args.total_steps
    return cfg


def model_config_of(cfg: ModelConfig, vocab_size: int | None = None) -> mtlm_hf.MTLMConfig:
    """The model's config: the `init_from` folder's, or the preset's, with `overrides` applied.

    Args:
        cfg (`ModelConfig`): The model section of the run.
        vocab_size (`int`, *optional*): The vocabulary of a tokenizer the run trains itself (`data.bpe_vocab_size`).

    Raises:
        InputFileError: If `init_from` is not a model folder.
        ConfigError: If the preset or an override is unknown or invalid, or an override contradicts `vocab_size`.
    """
    if vocab_size is not None:
        if cfg.init_from:
            raise ConfigError(
                "model.init_from continues a model with the tokenizer it was trained with; drop data.bpe_vocab_size."
            )
        if cfg.overrides.get("vocab_size", vocab_size) != vocab_size:
            raise ConfigError(
                f"model.overrides.vocab_size ({cfg.overrides['vocab_size']}) contradicts data.bpe_vocab_size "
                f"({vocab_size}); drop the override: the vocabulary follows the tokenizer."
            )
        cfg = ModelConfig(cfg.preset, {**cfg.overrides, "vocab_size": vocab_size})
    if cfg.init_from and not (Path(cfg.init_from) / "config.json").is_file():
        raise InputFileError(
            f"model.init_from: {cfg.init_from} is not a model folder (no config.json); give a folder written by "
            "save_pretrained."
        )
    with user_input("model"):
        if cfg.init_from:
            return mtlm_hf.MTLMConfig.from_pretrained(cfg.init_from, **cfg.overrides)
        return mtlm_hf.MTLMConfig.from_preset(cfg.preset, **cfg.overrides)


def validate(cfg: RunConfig, config: mtlm_hf.MTLMConfig, num_devices: int) -> None:
    """Refuse impossible runs before anything is written.

    Raises:
        ConfigError: Naming the setting and the limit it breaks.
    """
    t = cfg.training
    if cfg.data.seq_len > config.max_position_embeddings:
        raise ConfigError(
            f"data.seq_len ({cfg.data.seq_len}) exceeds the model's max_position_embeddings "
            f"({config.max_position_embeddings}): lower seq_len or raise max_position_embeddings."
        )
    if t.batch_size % num_devices:
        raise ConfigError(
            f"training.batch_size ({t.batch_size}) must divide evenly over the mesh's {num_devices} devices."
        )
    if not 0 <= t.warmup_steps < t.total_steps:
        raise ConfigError(
            f"training.warmup_steps ({t.warmup_steps}) must lie in [0, total_steps) (total_steps is {t.total_steps}): "
            "the cosine needs at least one step after the warmup."
        )
