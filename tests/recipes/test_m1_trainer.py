"""The M1 trainer (examples/m1/train.py) run for real in subprocesses: growth, exact resume, bad input."""

import gzip
import hashlib
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from scripts._launch import accelerate_launch, launch

from mtlm_recipes.cards import load_training_metadata
from mtlm_recipes.m1.checkpoints import STATE_FILE, complete_checkpoints

ROOT = Path(__file__).resolve().parents[2]
TRAIN = ROOT / "examples" / "m1" / "train.py"
CORPUS = ROOT / "examples" / "data" / "shakespeare"


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> dict[str, str]:
    """Three plays for training and one held-out act's worth of text, as local jsonl files."""
    folder = tmp_path_factory.mktemp("corpus")
    with gzip.open(CORPUS / "train.jsonl.gz", "rt") as f:
        plays = [json.loads(line) for _, line in zip(range(3), f, strict=False)]
    with gzip.open(CORPUS / "validation.jsonl.gz", "rt") as f:
        held_out = json.loads(f.readline())
    (folder / "train.jsonl").write_text("".join(json.dumps({"text": p["text"]}) + "\n" for p in plays))
    (folder / "val.jsonl").write_text(json.dumps({"text": held_out["text"][:40_000]}) + "\n")
    return {"train": str(folder / "train.jsonl"), "val": str(folder / "val.jsonl")}


def write_config(path: Path, corpus: dict, **changes) -> Path:
    config = {
        "model": {
            "preset": "m1-base",
            "overrides": {
                "hidden_size": 32,
                "intermediate_size": 64,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": 64,
                "hidden_dropout": 0.1,  # so that resuming must restore the RNG too
            },
        },
        "data": {"train": [{"path": corpus["train"]}], "validation": [{"path": corpus["val"]}], "seq_len": 64},
        "growth": {"at_step": 6, "spec": {"depth": 2, "depth_method": "stack"}},
        "training": {
            "total_steps": 12,
            "batch_size": 4,
            "grad_accum": 2,
            "lr": 3e-3,
            "warmup_steps": 3,
            "log_every": 2,
            "eval_every": 6,
            "checkpoint_every": 4,
            "seed": 0,
        },
    }
    for dotted, value in changes.items():
        section, key = dotted.split(".", 1)
        if section == "model":
            config["model"]["overrides"][key] = value
        else:
            config[section][key] = value
    path.write_text(yaml.safe_dump(config))
    return path


# Runs a script with tensorboard absent: `None` in sys.modules is how Python marks a module as missing, so
# `import tensorboard` fails and `importlib.util.find_spec` (what accelerate asks) finds nothing, as when the
# package is not installed at all.
_WITHOUT_TENSORBOARD = """
import runpy, sys
for name in ("tensorboard", "tensorboardX", "torch.utils.tensorboard"):
    sys.modules[name] = None
script, sys.argv = sys.argv[1], sys.argv[1:]
runpy.run_path(script, run_name="__main__")
"""


def train(
    config: Path, output_dir: Path, *extra: str, check: bool = True, without_tensorboard: bool = False
) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    wrapper = ["-c", _WITHOUT_TENSORBOARD] if without_tensorboard else []
    result = subprocess.run(
        [sys.executable, *wrapper, str(TRAIN), "--config", str(config), "--output-dir", str(output_dir), *extra],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=600,
    )
    if check:
        assert result.returncode == 0, result.stderr[-4000:]
    return result


def losses(output_dir: Path) -> dict[int, float]:
    rows = [json.loads(line) for line in (output_dir / "train_losses.jsonl").read_text().splitlines()]
    return {row["step"]: row["loss"] for row in rows}


@pytest.mark.slow
def test_interrupted_runs_resume_exactly_across_growth(tmp_path, small_corpus):
    config = write_config(tmp_path / "run.yaml", small_corpus)
    whole = tmp_path / "whole"
    train(config, whole)
    pieces = tmp_path / "pieces"
    train(config, pieces, "--stop-after", "4")  # before the growth step
    train(config, pieces, "--stop-after", "8")  # resumes, grows at 6, stops after
    train(config, pieces)  # resumes the grown model
    expected = losses(whole)
    assert sorted(expected) == list(range(1, 13))
    assert losses(pieces) == expected
    final = json.loads((whole / "final" / "config.json").read_text())
    assert final["num_hidden_layers"] == 4 and len(final["layer_types"]) == 4
    assert {"tokenizer.json", "model.safetensors", "modeling_mtlm.py"} <= {p.name for p in (whole / "final").iterdir()}
    assert list((whole / "logs").rglob("events.out.tfevents.*")), "TensorBoard wrote no event file"
    # The card's training metadata counts the steps trained twice after a resume once.
    metadata = load_training_metadata(pieces / "training.json")
    assert metadata["steps"] == 12 and metadata["tokens_trained"] == 12 * 4 * 2 * 64
    assert metadata["growth"] == {"at_step": 6, "from_layers": 2, "to_layers": 4, "method": "stack"}
    assert 0 < metadata["training_time_hours"] < 1 and metadata["precision"] == "fp32"


def _digest(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in folder.rglob("*")
        if p.is_file()
    }


@pytest.mark.slow  # two trainer runs: 20-35 s on 2 shared cores
def test_resume_from_another_architecture_is_refused_and_changes_nothing(tmp_path, small_corpus):
    config = write_config(tmp_path / "run.yaml", small_corpus, **{"growth.at_step": None})
    out = tmp_path / "out"
    train(config, out, "--stop-after", "2")
    before = _digest(out / "checkpoints")
    wider = write_config(tmp_path / "wider.yaml", small_corpus, **{"growth.at_step": None, "model.hidden_size": 64})
    result = train(wider, out, check=False)
    assert result.returncode != 0
    assert "another architecture" in result.stderr and "hidden_size" in result.stderr
    assert _digest(out / "checkpoints") == before


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"data.train": [{"path": "no/such/file.jsonl"}]}, "No file matches"),
        ({"data.seq_len": 128}, "max_position_embeddings"),
        ({"growth.at_step": 12}, "growth.at_step"),
    ],
)
def test_bad_input_fails_clearly_before_writing_anything(tmp_path, small_corpus, changes, message):
    config = write_config(tmp_path / "run.yaml", small_corpus, **changes)
    out = tmp_path / "out"
    result = train(config, out, check=False)
    assert result.returncode != 0
    assert message in result.stderr
    assert not out.exists()


def test_incomplete_checkpoint_is_never_resumed_from(tmp_path):
    root = tmp_path / "checkpoints"
    (root / "step_00000004").mkdir(parents=True)
    (root / "step_00000004" / STATE_FILE).write_text("{}")
    (root / ".step_00000008.tmp").mkdir()  # a crash while writing step 8
    (root / "step_00000012").mkdir()  # renamed but without its state file: not complete
    assert complete_checkpoints(root) == [root / "step_00000004"]


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["ddp", "fsdp"])
def test_two_process_run_grows_and_exports(tmp_path, small_corpus, engine):
    # FSDP: `ACCELERATE_USE_CPU=true accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2`.
    config = write_config(tmp_path / "run.yaml", small_corpus, **{"training.total_steps": 8, "growth.at_step": 4})
    out = tmp_path / "out"
    command = accelerate_launch(2, fsdp=engine == "fsdp")
    result = launch(command, TRAIN, "--config", str(config), "--output-dir", str(out), home=tmp_path / "hf_home")
    assert "grew to 4 layers" in result.stdout
    assert sorted(losses(out)) == list(range(1, 9))
    assert all(math.isfinite(loss) for loss in losses(out).values())
    final = json.loads((out / "final" / "config.json").read_text())
    assert final["num_hidden_layers"] == 4
    # Saved as the plain model class, not as the FSDP2 subclass with torch's FSDP files for custom code.
    assert final["auto_map"]["AutoModelForCausalLM"] == "modeling_mtlm.MTLMForCausalLM"
    assert not list((out / "final").glob("_fsdp*"))


@pytest.mark.slow
def test_runs_without_tensorboard_creating_its_output_folder_itself(tmp_path, small_corpus):
    config = write_config(tmp_path / "run.yaml", small_corpus, **{"training.total_steps": 4, "growth.at_step": 2})
    out = tmp_path / "new" / "run"  # no parent exists either
    result = train(config, out, without_tensorboard=True)
    assert "warning: tensorboard is not installed" in result.stderr
    assert sorted(losses(out)) == [1, 2, 3, 4]
    assert not list(out.rglob("events.out.tfevents.*"))
    assert json.loads((out / "final" / "config.json").read_text())["num_hidden_layers"] == 4
    assert load_training_metadata(out / "training.json")["steps"] == 4
