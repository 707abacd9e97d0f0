"""The loss log both trainers write (`train_losses.jsonl`) and the training metadata (`training.json`) made from it.

`hub_cards/build_card.py` reads the metadata (schema in `hub_cards/README.md`) and draws the loss log, so both
trainers write the same two files the same way and an M1 and an M2 run compare line for line.
"""

import json
from pathlib import Path

LOSS_LOG = "train_losses.jsonl"
METADATA_FILE = "training.json"


def log_step(output_dir: Path, step: int, loss: float, seconds: float) -> None:
    """Append one optimizer step (`{"step", "loss", "seconds"}`) to the run's loss log."""
    with (Path(output_dir) / LOSS_LOG).open("a") as log:
        log.write(json.dumps({"step": step, "loss": loss, "seconds": seconds}) + "\n")


def write_training_metadata(
    output_dir: Path,
    *,
    tokens_per_step: int,
    hardware: str,
    framework: str,
    precision: str,
    command: str | None = None,
    growth: dict | None = None,
) -> dict:
    """Write `training.json` for the run in `output_dir`, counted from its loss log.

    Steps logged twice (the tail of an interrupted run, trained again after resuming) count once, at their
    last time: the time is the sum of the optimizer steps' wall time over all sessions, without evaluation,
    checkpointing or start-up.

    Args:
        output_dir (`Path`): The run's folder, holding `train_losses.jsonl`.
        tokens_per_step (`int`): Tokens of one optimizer step (the global batch).
        hardware (`str`): What the run trained on, as a card states it ("2x NVIDIA H100 80GB HBM3").
        framework (`str`): E.g. "PyTorch 2.13.0 + Accelerate".
        precision (`str`): E.g. "bf16 autocast".
        command (`str`, *optional*): The command that ran the training.
        growth (`dict`, *optional*): `{"at_step", "from_layers", "to_layers", "method"}` for a grown model.

    Returns:
        `dict`: The metadata written.
    """
    output_dir = Path(output_dir)
    seconds_by_step = {}
    for line in (output_dir / LOSS_LOG).read_text().splitlines():
        record = json.loads(line)
        seconds_by_step[record["step"]] = record.get("seconds", 0.0)
    metadata = {
        "tokens_trained": tokens_per_step * len(seconds_by_step),
        "hardware": hardware,
        "training_time_hours": sum(seconds_by_step.values()) / 3600,
        "framework": framework,
        "precision": precision,
        "steps": len(seconds_by_step),
        "tokens_per_step": tokens_per_step,
        "loss_log": LOSS_LOG,
    }
    if command:
        metadata["command"] = command
    if growth:
        metadata["growth"] = growth
    (output_dir / METADATA_FILE).write_text(json.dumps(metadata, indent=2) + "\n")
    return metadata
