"""The main job (examples/quickstart.py), run for real at a few steps: outputs exist and are honest."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

ROOT = Path(__file__).resolve().parents[2]
MODEL_FILES = {
    "config.json",
    "configuration_mtlm.py",
    "modeling_mtlm.py",
    "model.safetensors",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "README.md",
    "training_loss.png",
    "loss_vs_flops.png",
}


@pytest.mark.slow  # three trainings, a tokenizer on the whole corpus and the held-out perplexity: about a minute
def test_quickstart_writes_results_plot_and_a_loadable_grown_model(tmp_path, run_without_mtlm):
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--scratch-steps", "6", "--eval-points", "3"]
        + ["--eval-blocks", "8", "--ppl-stride", "128", "--out", str(out)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"},
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "regime:" in result.stdout and "sample from the grown model" in result.stdout

    results = json.loads((out / "results.json").read_text())
    scratch, control, grown = results["runs"]
    assert "control" in control["name"]
    assert (scratch["layers_final"], control["layers_final"], grown["layers_final"]) == (6, 3, 6)
    budget = results["summary"]["flop_budget"]
    assert scratch["points"][-1]["flops"] == budget
    for run in (control, grown):  # the same FLOP budget, overshot by less than one of the 6 big-model steps
        assert 1 <= run["points"][-1]["flops"] / budget < 1 + 1 / 6
    assert grown["grown_at_flops"] is not None and grown["loss_jump_at_growth"] is not None
    summary = results["summary"]
    assert summary["big_from_scratch_beats_small_control"] == (
        scratch["points"][-1]["val_loss"] < control["points"][-1]["val_loss"]
    )
    assert ("does NOT measure growth" in summary["verdict"]) is not summary["big_from_scratch_beats_small_control"]
    grown_folder = out / "grown_model"
    assert (grown_folder / "loss_vs_flops.png").stat().st_size > 10_000

    # The M1 path: grown with the optimizer state carried, trained on, evaluated, written with its card.
    assert results["growth"]["optimizer"] == "copy" and results["growth"]["spec"]["depth"] == 2
    assert MODEL_FILES <= {path.name for path in grown_folder.iterdir()}
    training = json.loads((out / "training.json").read_text())
    steps = [json.loads(line)["step"] for line in (out / "train_losses.jsonl").read_text().splitlines()]
    assert steps == list(range(1, grown["points"][-1]["step"] + 1)) and training["steps"] == len(steps)
    assert training["growth"] == {
        "at_step": grown["grown_at_step"],
        "from_layers": 3,
        "to_layers": 6,
        "method": "stack",
    }
    assert 0 < grown["grown_at_step"] < len(steps)
    perplexity = json.loads((out / "perplexity.json").read_text())
    assert perplexity["stride"] == 128 and perplexity["bytes"] > 250_000  # both held-out plays, whole
    card = ModelCard.load(grown_folder / "README.md")
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == results["perplexity"] == {k: perplexity[k] for k in metrics}
    assert {r.dataset_name for r in card.data.eval_results} == {"Hamlet and The Tempest (held out)"}
    assert f"{grown['points'][-1]['val_loss']:.3f}" in card.text and summary["shows"] in card.text
    assert training["date"] in card.text and training["hardware"] in card.text

    remote = run_without_mtlm(
        f"""
        import json
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder = {str(grown_folder)!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # it reads config.json
        ids = tokenizer("ROMEO:", return_tensors="pt")
        text = tokenizer.decode(model.generate(**ids, max_new_tokens=5, do_sample=False)[0])
        print(json.dumps({{"layers": model.config.num_hidden_layers, "text": text}}))
        """
    )
    assert remote["layers"] == 6 and remote["text"].startswith("ROMEO:")
