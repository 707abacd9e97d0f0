"""A user's mistake in an example script or CLI is one `error:` line on stderr with the fix, exit status 2, and
nothing written: run for real, each script in a fresh process."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import mtlm_hf

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "shakespeare" / "validation.jsonl.gz"
HAS_JAX = importlib.util.find_spec("jax") is not None


def run_script(script: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(ROOT / script), *map(str, args)],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )


def assert_one_line_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-3000:]
    for fragment in fragments:
        assert fragment in lines[0]


def trainer_config(path: Path, output_dir: Path, m2: bool = False, **sections) -> Path:
    """A tiny run config for either trainer, with `sections` replacing or adding whole top-level keys."""
    overrides = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4}
    config = {
        "output_dir": str(output_dir),
        "model": {"preset": "m2" if m2 else "m1-base", "overrides": {**overrides, "max_position_embeddings": 64}},
        "data": {"train": [{"path": str(CORPUS)}], "validation": [{"path": str(CORPUS)}], "seq_len": 32},
        "training": {"total_steps": 4, "batch_size": 2, "warmup_steps": 1},
        **sections,
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def model_without_tokenizer(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("model")
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(mtlm_hf.MTLMConfig.from_preset("m1-tiny")).save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("changes", "fragments"),
    [
        ({"trainng": {"total_steps": 4}}, ("unknown key 'trainng' at the top level", "did you mean 'training'?")),
        ({"growth": {"at_step": 2, "spec": {"dept": 2}}}, ("growth.spec", "'dept'", "did you mean 'depth'?")),
        ({"growth": {"at_step": 2, "spec": {"depth": 1.3}}}, ("growth.spec",)),
        ({"training": {"mixed_precision": "bf15"}}, ("training.mixed_precision", "did you mean 'bf16'?")),
        (
            {"data": {"train": [{"path": "no/such/file.jsonl"}], "seq_len": 32}},
            ("No file matches the data path 'no/such/file.jsonl'",),
        ),
    ],
)
def test_m1_trainer_reports_a_bad_config_in_one_line(tmp_path, changes, fragments):
    out = tmp_path / "out"
    result = run_script("examples/m1/train.py", "--config", trainer_config(tmp_path / "run.yaml", out, **changes))
    assert_one_line_error(result, *fragments)
    assert not out.exists()


def test_m1_trainer_reports_a_misspelt_model_override_with_the_nearest_field(tmp_path):
    config = trainer_config(tmp_path / "run.yaml", tmp_path / "out", model={"overrides": {"hiden_size": 64}})
    assert_one_line_error(
        run_script("examples/m1/train.py", "--config", config), "model", "'hiden_size'", "hidden_size"
    )


@pytest.mark.slow
def test_m1_trainer_reports_a_missing_config_and_a_missing_checkpoint(tmp_path):
    assert_one_line_error(run_script("examples/m1/train.py", "--config", tmp_path / "none.yaml"), "no config file")
    config = trainer_config(tmp_path / "run.yaml", tmp_path / "out")
    result = run_script("examples/m1/train.py", "--config", config, "--resume", tmp_path / "no_checkpoint")
    assert_one_line_error(result, "is not a complete checkpoint")


@pytest.mark.slow
@pytest.mark.skipif(not HAS_JAX, reason="JAX is not installed; the M2 JAX path needs `pip install '.[jax]'`")
def test_m2_trainer_reports_a_bad_config_in_one_line(tmp_path):
    config = trainer_config(tmp_path / "run.yaml", tmp_path / "out", m2=True)
    raw = yaml.safe_load(config.read_text())
    raw["training"]["batch_sise"] = 4
    config.write_text(yaml.safe_dump(raw))
    assert_one_line_error(run_script("examples/m2_jax/train.py", "--config", config), "did you mean 'batch_size'?")
    assert not (tmp_path / "out").exists()


def test_quickstart_reports_a_bad_value_in_one_line(tmp_path):
    result = run_script("examples/quickstart.py", "--grow-at", "1.5", "--out", tmp_path / "out")
    assert_one_line_error(result, "--grow-at must lie strictly between 0 and 1")


@pytest.mark.slow
def test_perplexity_reports_a_missing_tokenizer_and_a_missing_text_file(tmp_path, model_without_tokenizer):
    excerpt = ROOT / "tests/data/eval/wikitext2/wikitext-2-raw-v1.test.hf-joined.excerpt.txt"
    args = ("examples/eval/perplexity.py", model_without_tokenizer, "--out", tmp_path / "ppl.json")
    assert_one_line_error(run_script(*args, "--text-file", excerpt), "no tokenizer in", "--tokenizer FOLDER")
    result = run_script(*args, "--text-file", excerpt, "--tokenizer", tmp_path / "no_tokenizer")
    assert_one_line_error(result, "no tokenizer in", "tokenizer.save_pretrained")
    mtlm_hf.mistral_tokenizer().save_pretrained(tmp_path / "tokenizer")
    result = run_script(*args, "--text-file", tmp_path / "none.txt", "--tokenizer", tmp_path / "tokenizer")
    assert_one_line_error(result, "no text file")
    assert not (tmp_path / "ppl.json").exists()


@pytest.mark.slow
def test_build_card_reports_missing_files_and_bad_metadata_in_one_line(tmp_path, model_without_tokenizer):
    ppl = tmp_path / "ppl.json"
    ppl.write_text("{}")
    args = ("hub_cards/build_card.py", "m2", model_without_tokenizer, "--repo-id", "u/m", "--perplexity", ppl)
    out = ("--out-dir", tmp_path / "card")
    result = run_script(*args, "--training", tmp_path / "training.json", *out)
    assert_one_line_error(result, "no training metadata at")
    (tmp_path / "training.json").write_text('{"tokens": 5}')
    result = run_script(*args, "--training", tmp_path / "training.json", *out)
    assert_one_line_error(result, "unknown field 'tokens'", "missing 'tokens_trained'", "hub_cards/README.md")
    assert not (tmp_path / "card").exists()
