"""The one-command benchmark run (examples/eval/run_benchmarks.py) on a tiny random MTLM, offline, on local data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from transformers import AutoModelForCausalLM

import mtlm_hf

pytestmark = pytest.mark.slow  # one lm-eval run over every card benchmark: 40-75 s on 2 shared cores

pytest.importorskip("lm_eval", reason="lm-evaluation-harness is the `eval` extra: pip install -e '.[eval]'")

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "tests" / "data" / "eval"
ALL_TASKS = {
    "winogrande",
    "copa",
    "boolq",
    "wsc273",
    "wsc",
    "truthfulqa_mc1",
    "truthfulqa_mc2",
    "arc_easy",
    "arc_challenge",
    "openbookqa",
    "hellaswag",
    "agieval_aqua_rat",
    "commonsense_qa",
}
# Partial scoring (one shared continuation) and TruthfulQA MC2 (a probability mass) have no length-normalized score.
WITHOUT_ACC_NORM = {"winogrande", "wsc273", "truthfulqa_mc2"}
LIMIT = 3


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    work = tmp_path_factory.mktemp("bench")
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset("m1-tiny", vocab_size=32000, max_position_embeddings=1024)
    model_dir = work / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    mtlm_hf.mistral_tokenizer().save_pretrained(model_dir)
    out = work / "results.json"
    # The offline switches are left out of the environment on purpose: the script must set them itself.
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples/eval/run_benchmarks.py"), str(model_dir), "--data-dir", str(DATA)]
        + ["--out", str(out), "--limit", str(LIMIT)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(out.read_text()), out, model_dir, run.stdout


def test_every_card_benchmark_produces_acc_and_acc_norm_in_range(results):
    report, _, _, stdout = results
    assert set(report["tasks"]) == ALL_TASKS
    for task, result in report["tasks"].items():
        assert 0.0 <= result["acc"] <= 1.0, task
        if task in WITHOUT_ACC_NORM:
            assert "acc_norm" not in result, task
        else:
            assert 0.0 <= result["acc_norm"] <= 1.0, task
        assert result["items"] == min(LIMIT, result["rows"]), task
        assert f"{task} " in stdout


def test_deviations_from_the_hub_data_are_recorded(results):
    tasks = results[0]["tasks"]
    assert {task for task, r in tasks.items() if not r["prompts_identical"]} == {
        "boolq",
        "arc_easy",
        "arc_challenge",
        "hellaswag",
    }
    assert "title" in tasks["boolq"]["deviations"][0]
    assert "4 choices" in tasks["arc_easy"]["deviations"][0]
    assert "capitalize" in tasks["hellaswag"]["deviations"][0]
    assert "XML" in tasks["wsc273"]["deviations"][0]
    assert "rebuilt" in tasks["copa"]["deviations"][0]
    for task, result in tasks.items():
        assert result["hub_dataset"]["path"] and result["source_sha256"], task


def test_the_run_names_its_conditions_and_reads_only_local_files(results):
    report, out, model_dir, _ = results
    assert report["harness"]["lm_eval"].startswith("0.4.") and report["harness"]["num_fewshot"] == 0
    assert report["harness"]["limit"] == LIMIT
    assert report["model"]["model_type"] == "mtlm" and report["model"]["tokenizer"]["vocab_size"] == 32000
    for result in report["tasks"].values():
        config = yaml.safe_load(Path(result["task_yaml"]).read_text())
        assert config["dataset_path"] == "json"
        assert all(Path(path).is_file() for path in config["dataset_kwargs"]["data_files"].values())
        assert Path(result["task_yaml"]).is_relative_to(out.parent)


def test_the_results_fill_a_model_card(results, tmp_path):
    """The card builder reads this JSON as written: each task's acc lands in the card's model-index."""
    from huggingface_hub import ModelCard

    from mtlm_recipes.cards import build_card

    report, out, model_dir, _ = results
    training = tmp_path / "training.json"
    training.write_text(json.dumps({"tokens_trained": 1000, "hardware": "none", "training_time_hours": 0.01}))
    build_card("m1", model_dir, "tester/tiny", training, benchmarks_path=out, out_dir=tmp_path)
    card = ModelCard.load(tmp_path / "README.md")
    values = sorted(r.metric_value for r in card.data.eval_results if r.metric_type in ("acc", "mc1", "mc2"))
    assert values == sorted(result["acc"] for result in report["tasks"].values())
    assert "Smoke run" in card.text  # --limit was given


def test_a_folder_without_config_is_refused_with_the_fix(tmp_path):
    run = subprocess.run(
        [sys.executable, str(ROOT / "examples/eval/run_benchmarks.py"), str(tmp_path), "--data-dir", str(DATA)]
        + ["--out", str(tmp_path / "r.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0 and "save_pretrained" in run.stderr
    assert not (tmp_path / "r.json").exists()
