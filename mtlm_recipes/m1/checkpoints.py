"""Crash-safe training checkpoints on top of Accelerate's `save_state` / `load_state`.

Each checkpoint is written into a hidden temporary folder and renamed into place only once it is
complete (a rename is atomic on one filesystem), so a crash mid-write leaves the previous
checkpoint as the newest complete one. `trainer_state.json` is written last and marks a folder
as complete; it also holds the step and the model's architecture (`mtlm_recipes.checkpoint_config`).
"""

import json
import re
import shutil
from pathlib import Path

from accelerate import Accelerator

from ..errors import InputFileError

STATE_FILE = "trainer_state.json"
_NAME = re.compile(r"^step_(\d{8})$")


def complete_checkpoints(root: Path) -> list[Path]:
    """Complete checkpoints under `root`, oldest first."""
    if not root.is_dir():
        return []
    found = [p for p in root.iterdir() if _NAME.match(p.name) and (p / STATE_FILE).is_file()]
    return sorted(found, key=lambda p: p.name)


def read_state(checkpoint: Path) -> dict:
    """The trainer state of a checkpoint; a clear error when the folder is not one."""
    state_file = Path(checkpoint) / STATE_FILE
    if not state_file.is_file():
        raise InputFileError(
            f"{checkpoint} is not a complete checkpoint of this trainer (no {STATE_FILE}); "
            "give a folder under <output_dir>/checkpoints/."
        )
    return json.loads(state_file.read_text())


def save_checkpoint(accelerator: Accelerator, root: Path, step: int, state: dict, keep: int) -> Path:
    """Save the full training state for `step` atomically, then prune all but the newest `keep`."""
    final = root / f"step_{step:08d}"
    temporary = root / f".step_{step:08d}.tmp"
    if accelerator.is_main_process:
        shutil.rmtree(temporary, ignore_errors=True)
        root.mkdir(parents=True, exist_ok=True)
    accelerator.wait_for_everyone()
    accelerator.save_state(str(temporary))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        (temporary / STATE_FILE).write_text(json.dumps(state, indent=2))
        if final.exists():  # the same step saved by an earlier, interrupted run
            shutil.rmtree(final)
        temporary.rename(final)
        for old in complete_checkpoints(root)[:-keep]:
            shutil.rmtree(old)
    accelerator.wait_for_everyone()
    return final
