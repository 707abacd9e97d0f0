"""The growth benchmark (benchmarks/growth_speedup.py, analysis in mtlm_recipes.growth_speedup), run for real at a
tiny setting: its JSON is complete and consistent with its own curves. Its conclusions are not tested (a tiny run
proves nothing)."""

import argparse
import gzip
import json
import os
import statistics
import subprocess
import sys
from dataclasses import fields, replace
from pathlib import Path

import pytest
import torch

from mtlm_recipes import compute_matched, growth_speedup
from mtlm_recipes.packing import pack_texts

pytestmark = pytest.mark.slow  # trains every arm of the study at a few steps: 25-40 s on 2 shared cores

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "examples" / "data" / "shakespeare"
SEEDS = [0, 1]
GROWTH = ["stack@0.25", "stack@0.5", "interleave@0.5", "identity@0.5"]
SCRATCH_STEPS = 8


def write_small_corpus(folder: Path) -> Path:
    """A slice of the embedded corpus (real text), so the tokenizer trains in a fraction of a second."""
    folder.mkdir()
    for split, chars in (("train", 150_000), ("validation", 20_000)):
        with gzip.open(CORPUS / f"{split}.jsonl.gz", "rt") as source:
            docs = [json.loads(line) for line in source][:2]
        with gzip.open(folder / f"{split}.jsonl.gz", "wt") as target:
            for doc in docs:
                target.write(json.dumps({"text": doc["text"][: chars // 2]}) + "\n")
    return folder


def run_study(out: Path, corpus: Path, growth: list[str], *extra: str) -> dict:
    """`benchmarks/growth_speedup.py` at a few steps of a tiny model, in a subprocess; its report."""
    command = [sys.executable, str(ROOT / "benchmarks" / "growth_speedup.py"), "--out", str(out)]
    command += ["--data-dir", str(corpus), "--vocab-size", "300", "--hidden-size", "32"]
    command += ["--intermediate-size", "64", "--num-attention-heads", "2", "--seq-len", "32", "--batch-size", "4"]
    command += ["--scratch-steps", str(SCRATCH_STEPS), "--warmup-steps", "2", "--eval-points", "4"]
    command += ["--eval-blocks", "8", "--seeds", *map(str, SEEDS), "--growth", *growth, *extra]
    # One thread: a model this small gains nothing from more, and threads contend on shared cores.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (out / "growth_speedup.png").stat().st_size > 10_000
    return json.loads((out / "growth_speedup.json").read_text())


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    return write_small_corpus(tmp_path_factory.mktemp("growth_speedup") / "corpus")


@pytest.fixture(scope="module")
def report(tmp_path_factory, corpus) -> dict:
    return run_study(tmp_path_factory.mktemp("growth_speedup"), corpus, GROWTH)


def test_report_has_scratch_the_control_and_every_grown_run_for_every_seed(report):
    kinds = [run["kind"] for run in report["runs"]]
    assert kinds == ["scratch", "control"] + ["grown"] * len(GROWTH)
    assert "control" in report["runs"][1]["name"]
    grown = [f"{run['growth']['method']}@{run['growth']['at']:g}" for run in report["runs"][2:]]
    assert grown == GROWTH
    for run in report["runs"]:
        assert [seed_run["seed"] for seed_run in run["seeds"]] == SEEDS
    assert report["flop_formula"].startswith("6 * (non-embedding parameters + hidden_size * vocab_size)")
    assert report["gpu_run"].startswith("not measured")
    assert report["wall_time_s"] > 0 and len(report["load_average_start"]) == len(report["load_average_end"]) == 3


def test_every_run_spends_the_same_flop_budget(report):
    budget = report["flop_budget"]
    big, small = report["models"]["big"], report["models"]["small"]
    assert budget == SCRATCH_STEPS * 4 * 32 * big["flops_per_token"]
    assert big["layers"] == 2 * small["layers"] and big["flops_per_token"] > small["flops_per_token"]
    for run in report["runs"]:
        for seed_run in run["seeds"]:
            spent = seed_run["points"][-1]["flops"]
            assert budget <= spent < budget * (1 + 1 / SCRATCH_STEPS)  # overshot by less than one big step
            expected_layers = small["layers"] if run["kind"] == "control" else big["layers"]
            assert seed_run["layers_final"] == expected_layers
        # Seeds share their evaluation points, so the plotted mean and band are taken point by point.
        assert len({tuple(p["flops"] for p in s["points"]) for s in run["seeds"]}) == 1


def test_regime_check_matches_the_final_losses(report):
    regime = report["regime"]
    scratch, control = report["runs"][0]["seeds"], report["runs"][1]["seeds"]
    beats = all(
        s["points"][-1]["val_loss"] < c["points"][-1]["val_loss"] for s, c in zip(scratch, control, strict=True)
    )
    assert regime["big_from_scratch_beats_small_control"] is beats
    assert regime["tokens_per_parameter"] == pytest.approx(
        scratch[0]["tokens"] / report["models"]["big"]["parameters"]
    )
    assert ("does NOT measure growth" in report["verdict"]) is (not beats)
    assert regime["scratch_final_val_loss"]["mean"] == pytest.approx(
        statistics.fmean(s["points"][-1]["val_loss"] for s in scratch)
    )


def test_flops_to_reach_scratch_loss_are_read_off_each_seeds_curve(report):
    scratch_by_seed = {s["seed"]: s for s in report["runs"][0]["seeds"]}
    for run in report["runs"]:
        for seed_run in run["seeds"]:
            scratch = scratch_by_seed[seed_run["seed"]]
            target = scratch["points"][-1]["val_loss"]
            assert seed_run["scratch_final_val_loss"] == target
            points, reached = seed_run["points"], seed_run["flops_to_reach_scratch_final_loss"]
            crossing = next((i for i in range(1, len(points)) if points[i]["val_loss"] <= target), None)
            if crossing is None:
                assert reached is None and seed_run["fraction_of_scratch_flops"] is None
                continue
            assert points[crossing - 1]["flops"] < reached <= points[crossing]["flops"]
            scratch_flops = scratch["flops_to_reach_scratch_final_loss"]
            assert seed_run["fraction_of_scratch_flops"] == pytest.approx(reached / scratch_flops)
        summary = run["summary"]
        fractions = [s["fraction_of_scratch_flops"] for s in run["seeds"]]
        if None in fractions:
            assert summary["fraction_of_scratch_flops"] is None
        else:
            assert summary["fraction_of_scratch_flops"]["mean"] == pytest.approx(statistics.fmean(fractions))


def test_loss_jump_is_reported_for_grown_runs_and_is_nil_for_identity_growth(report):
    budget = report["flop_budget"]
    for run in report["runs"]:
        for seed_run in run["seeds"]:
            if run["kind"] != "grown":
                assert seed_run["loss_jump_at_growth"] is None and seed_run["grown_at_flops"] is None
                continue
            assert seed_run["grown_at_flops"] >= run["growth"]["at"] * budget
            if run["growth"]["method"] == "identity":  # function-preserving: the loss does not move
                assert abs(seed_run["loss_jump_at_growth"]) < 1e-4
            else:
                assert seed_run["loss_jump_at_growth"] is not None


def test_bad_growth_spec_and_missing_corpus_get_clear_errors(tmp_path):
    assert growth_speedup.parse_growth("interleave@0.3").spec.depth_method == "interleave"
    for bad in ("stack", "grow@0.4", "stack@1.5"):
        with pytest.raises(argparse.ArgumentTypeError, match="METHOD@FRACTION"):
            growth_speedup.parse_growth(bad)
    with pytest.raises(FileNotFoundError, match="train.jsonl.gz and validation.jsonl.gz"):
        compute_matched.load_corpus(growth_speedup.GrowthSpeedupConfig(), tmp_path)


def test_several_corpus_folders_train_on_all_and_share_the_validation_blocks(tmp_path):
    cfg = growth_speedup.GrowthSpeedupConfig(vocab_size=300, seq_len=32, eval_blocks=7)
    first = write_small_corpus(tmp_path / "first")
    novels = tmp_path / "novels"  # a slice of the embedded novels, written the same way
    novels.mkdir()
    for split in ("train", "validation"):
        with gzip.open(compute_matched.NOVELS_DIR / f"{split}.jsonl.gz", "rt") as source:
            doc = json.loads(source.readline())
        with gzip.open(novels / f"{split}.jsonl.gz", "wt") as target:
            target.write(json.dumps({"title": doc["title"], "text": doc["text"][:40_000]}) + "\n")
    alone = {folder: compute_matched.load_corpus(cfg, folder) for folder in (first, novels)}
    both = compute_matched.load_corpus(cfg, [first, novels])
    assert both.train.numel() > max(corpus.train.numel() for corpus in alone.values())
    assert both.val.shape == (7, 32) and both.val_titles == ["Persuasion"]
    # 4 blocks from the first folder's validation text, 3 from the second's, each the start of its own split.
    for blocks, folder in ((both.val[:4], first), (both.val[4:], novels)):
        texts = [json.loads(line)["text"] for line in gzip.open(folder / "validation.jsonl.gz", "rt")]
        own = torch.from_numpy(pack_texts(texts, both.tokenizer, cfg.seq_len))[: len(blocks)]
        assert torch.equal(blocks, own)
    with pytest.raises(FileNotFoundError, match="no corpus folder given"):
        compute_matched.load_corpus(cfg, [])


def test_the_plot_is_redrawn_from_the_json_alone(report, tmp_path):
    growth_speedup.plot_report(report, tmp_path / "replot.png")
    assert (tmp_path / "replot.png").stat().st_size > 10_000


def test_runs_of_a_report_at_the_same_config_are_reused_not_trained_again(report, corpus, tmp_path):
    (tmp_path / "first.json").write_text(json.dumps(report))
    again = run_study(tmp_path, corpus, [*GROWTH, "width@0.5"], "--reuse-runs", str(tmp_path / "first.json"))
    first = {run["name"]: run["seeds"] for run in report["runs"]}
    # Every run of the first report is taken from it; only the width arm and its control are trained.
    assert sorted(again["reused_runs"]["runs"]) == sorted(f"{name}, seed {seed}" for name in first for seed in SEEDS)
    assert len(again["runs"]) == len(first) + 2
    for run in again["runs"]:
        if run["name"] in first:
            assert [s["points"] for s in run["seeds"]] == [s["points"] for s in first[run["name"]]]
    names = {field.name for field in fields(growth_speedup.GrowthSpeedupConfig)}
    config = growth_speedup.GrowthSpeedupConfig(**{k: v for k, v in report["config"].items() if k in names})
    tokens = compute_matched.load_corpus(config, corpus)
    assert tokens.summary() == report["corpus"]
    budget = report["flop_budget"]
    assert growth_speedup.recorded_runs(report, config, budget, tokens).keys() == {
        (n, s) for n in first for s in SEEDS
    }
    assert growth_speedup.recorded_runs(report, config, budget + 1, tokens) == {}
    wider = replace(config, hidden_size=2 * config.hidden_size)
    assert growth_speedup.recorded_runs(report, wider, budget, tokens) == {}
    other_text = replace(tokens, train=tokens.train.flip(0))  # the same tokens in another order: other runs
    assert growth_speedup.recorded_runs(report, config, budget, other_text) == {}
    as_scale_study = {"studies": [{"cfg": report["config"], "flop_budget": budget, "runs": report["runs"]}]}
    assert growth_speedup.recorded_runs(as_scale_study, config, budget, tokens).keys() == {
        (name, seed) for name in first for seed in SEEDS
    }
