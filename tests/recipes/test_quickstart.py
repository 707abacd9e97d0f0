"""The main job (examples/quickstart.py), run for real at a few steps: outputs exist and are honest."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_quickstart_writes_results_plot_and_a_loadable_grown_model(tmp_path, run_without_mtlm):
    out = tmp_path / "quickstart"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--scratch-steps", "6", "--eval-points", "3"]
        + ["--eval-blocks", "8", "--out", str(out)],
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
    assert (out / "loss_vs_flops.png").stat().st_size > 10_000

    remote = run_without_mtlm(
        f"""
        import json
        from transformers import AutoModelForCausalLM, AutoTokenizer
        folder = {str(out / "grown_model")!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)
        tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)  # it reads config.json
        ids = tokenizer("ROMEO:", return_tensors="pt")
        text = tokenizer.decode(model.generate(**ids, max_new_tokens=5, do_sample=False)[0])
        print(json.dumps({{"layers": model.config.num_hidden_layers, "text": text}}))
        """
    )
    assert remote["layers"] == 6 and remote["text"].startswith("ROMEO:")
