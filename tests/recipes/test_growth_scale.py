"""The growth study across sizes (benchmarks/growth_scale.py, analysis in mtlm_recipes.growth_scale): its settings
span what the issue asks, its largest quick size is the growth_speedup run, its fit recovers a known trend, a
stopped run resumes from its cache, and a tiny real run writes a complete report (width arm included) from which
the planner's points are exported. Its conclusions are not tested (a tiny run proves nothing)."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import pytest
from test_growth_speedup import ROOT, write_small_corpus

from mtlm_recipes.compute_matched import Corpus, build_model, load_corpus
from mtlm_recipes.errors import ConfigError
from mtlm_recipes.flops import count_non_embedding_parameters
from mtlm_recipes.growth_scale import (
    GSTACK_PUBLISHED,
    SETTINGS,
    SIZES,
    ScaleSetting,
    fit_saving,
    plan_studies,
    run_studies,
    seed_savings,
    size_config,
)
from mtlm_recipes.growth_speedup import WIDTH_NOISE, GrowthSpeedupConfig, half_width, parse_growth, plan_arms

VOCAB = 1024


def non_embedding(size: str) -> int:
    cfg = size_config(GrowthSpeedupConfig(), SIZES[size], 20)
    return count_non_embedding_parameters(build_model(cfg, 2 * cfg.small_layers, VOCAB))


@pytest.mark.parametrize("name", ["quick", "full"])
def test_each_setting_spans_eight_times_with_scratch_and_control_at_every_size_and_budget(name):
    setting = SETTINGS[name]
    sizes = [non_embedding(size) for size in setting.sizes]
    assert max(sizes) / min(sizes) >= 8 and len(sizes) >= 3
    assert setting.tokens_per_parameter[0] == 20 and min(setting.tokens_per_parameter) < 20
    assert len(setting.seeds) >= 2
    for study in plan_studies(setting, GrowthSpeedupConfig(), VOCAB):
        assert [arm.kind for arm in study.arms[:2]] == ["scratch", "control"]
        params = sum(p.numel() for p in build_model(study.cfg, study.arms[0].layers, VOCAB).parameters())
        tokens = study.cfg.scratch_steps * study.cfg.batch_size * study.cfg.seq_len
        assert (
            abs(tokens / params - study.tokens_per_parameter) <= 5 * study.cfg.batch_size * study.cfg.seq_len / params
        )


def test_h48_at_20_tokens_per_parameter_is_the_growth_speedup_run_and_reuses_its_runs():
    assert size_config(GrowthSpeedupConfig(), SIZES["h48"], 20) == GrowthSpeedupConfig()
    report = json.loads((ROOT / "benchmarks" / "growth_speedup.json").read_text())
    setting = ScaleSetting(("h48",), (20.0,), (0, 1), {"h48": ("stack@0.4",)})
    (study,) = plan_studies(setting, GrowthSpeedupConfig(), VOCAB)
    corpus = load_corpus(GrowthSpeedupConfig())  # the embedded Shakespeare the report trained on
    lines = study.runs_of(report, corpus)
    assert {line["arm"] for line in lines} == {arm.name for arm in study.arms}
    assert all(line["record"]["points"] and line["budget"] == report["flop_budget"] for line in lines)
    assert replace(study, budget=study.budget + 1).runs_of(report, corpus) == []
    assert study.runs_of(report, replace(corpus, train=corpus.train[:-1])) == []  # another corpus: other runs


def test_an_unknown_size_is_a_clear_error():
    with pytest.raises(ConfigError, match="unknown --sizes h7: choose from h16"):
        plan_studies(ScaleSetting(("h7",), (20.0,), (0,), {}), GrowthSpeedupConfig(), VOCAB)


def fake_row(parameters: float, savings: list[float], bounds: tuple[bool, ...] = ()) -> dict:
    per_seed = [{"seed": i, "saving": s, "upper_bound": bounds[i] if bounds else False} for i, s in enumerate(savings)]
    return {"big_non_embedding_parameters": parameters, "arms": {"stack@0.4": {"saving_per_seed": per_seed}}}


def test_fit_recovers_a_known_trend_and_says_whether_gstack_lies_inside_its_interval():
    # fraction = 10 ** (0.02 - 0.02 log10 N) with +-0.005 of seed noise: near 0.67 at 1e9, i.e. G_stack's ~33%.
    rows = [
        fake_row(n, [1 - 10 ** (0.02 - 0.02 * math.log10(n)) + d for d in (-0.005, 0.005)]) for n in (1e4, 1e5, 1e6)
    ]
    fit = fit_saving(rows, "stack@0.4")
    assert fit["slope_per_decade"] == pytest.approx(-0.02, abs=0.003)
    assert fit["points"] == 6 and fit["points_that_are_upper_bounds"] == 0
    assert all(
        p["our_fit"]["low"] < p["our_fit"]["mean"] < p["our_fit"]["high"] < 1 for p in fit["at_gstack_published"]
    )
    flat = fit_saving([fake_row(n, [-0.01, 0.01]) for n in (1e4, 1e5, 1e6)], "stack@0.4")
    assert [p["consistent"] for p in flat["at_gstack_published"]] == [False] * len(GSTACK_PUBLISHED)
    assert fit_saving(rows[:2], "stack@0.4") is None  # two sizes do not make a trend with an interval


def test_a_seed_that_never_reaches_scratchs_loss_enters_as_its_upper_bound():
    reached = {"seed": 0, "fraction_of_scratch_flops": 0.8, "points": [{"flops": 10.0}]}
    missed = {
        "seed": 1,
        "fraction_of_scratch_flops": None,
        "points": [{"flops": 10.0}],
        "reuse": {"scratch_flops_to_reach_its_final_loss": 9.0},
    }
    savings = seed_savings({"seeds": [reached, missed]})
    assert savings[0] == {"seed": 0, "saving": pytest.approx(0.2), "upper_bound": False}
    assert savings[1] == {"seed": 1, "saving": pytest.approx(1 - 10 / 9), "upper_bound": True}


@pytest.fixture(scope="module")
def small_corpus(tmp_path_factory) -> Corpus:
    return load_corpus(GrowthSpeedupConfig(vocab_size=300), write_small_corpus(tmp_path_factory.mktemp("c") / "c"))


def test_a_stopped_study_resumes_from_its_cache_without_training(tmp_path, small_corpus):
    setting = ScaleSetting(("h16",), (1.0,), (0, 3), {"h16": ("stack@0.5",)})
    (study,) = plan_studies(setting, GrowthSpeedupConfig(), VOCAB)
    cache = tmp_path / "runs.jsonl"
    lines = [
        study.cache_line(arm.name, seed, small_corpus, {"seed": seed, "id": i})
        for i, (arm, seed) in enumerate((arm, seed) for arm in study.arms for seed in setting.seeds)
    ]
    cache.write_text("".join(json.dumps(line) + "\n" for line in lines))
    results = run_studies([study], list(setting.seeds), small_corpus, workers=1, cache=cache)
    assert [[r["id"] for r in runs] for runs in results[study.key].values()] == [[0, 1], [2, 3], [4, 5]]
    # Runs handed over from an earlier report count the same, and are not written to the cache again.
    cache.unlink()
    results = run_studies([study], list(setting.seeds), small_corpus, workers=1, cache=cache, reused=lines)
    assert [[r["id"] for r in runs] for runs in results[study.key].values()] == [[0, 1], [2, 3], [4, 5]]
    assert not cache.exists()


def test_cached_runs_of_another_corpus_are_trained_again_on_this_one(tmp_path, small_corpus):
    base = GrowthSpeedupConfig(vocab_size=300, batch_size=4, seq_len=32, eval_points=2, eval_blocks=4)
    setting = ScaleSetting(("h16",), (0.05,), (0,), {"h16": ()})
    (study,) = plan_studies(setting, base, small_corpus.vocab_size)
    other = replace(small_corpus, train=small_corpus.train[1:])
    cache = tmp_path / "runs.jsonl"
    cache.write_text("".join(json.dumps(study.cache_line(arm.name, 0, other, {"id": 0})) + "\n" for arm in study.arms))
    results = run_studies([study], [0], small_corpus, workers=1, cache=cache)
    assert all("id" not in runs[0] and runs[0]["points"] for runs in results[study.key].values())
    assert {json.loads(line)["corpus"] for line in cache.read_text().splitlines()} == {
        other.fingerprint,
        small_corpus.fingerprint,
    }


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> dict:
    tmp = tmp_path_factory.mktemp("growth_scale")
    command = [sys.executable, str(ROOT / "benchmarks" / "growth_scale.py"), "--quick", "--out", str(tmp)]
    command += ["--data-dir", str(write_small_corpus(tmp / "corpus")), "--vocab-size", "300", "--seeds", "0", "1"]
    command += ["--tokens-per-parameter", "0.1", "0.05", "--growth", "stack@0.4", "width@0.5"]
    command += ["--eval-points", "3", "--eval-blocks", "8", "--batch-size", "8", "--seq-len", "32", "--reuse-runs"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    result = subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=900)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (tmp / "growth_scale_quick.png").stat().st_size > 10_000
    assert not (tmp / "growth_scale_quick.runs.jsonl").exists()  # the cache goes once the report is written
    points = tmp / "points.json"
    export = [sys.executable, str(ROOT / "benchmarks" / "growth_scale.py"), "--export-points"]
    export += [str(tmp / "growth_scale_quick.json"), "--points-out", str(points)]
    result = subprocess.run(export, capture_output=True, text=True, cwd=ROOT, env=env, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return {**json.loads((tmp / "growth_scale_quick.json").read_text()), "points": json.loads(points.read_text())}


@pytest.mark.slow  # a tiny real run of 3 sizes x 2 budgets x 2 seeds in 2 worker processes: 3-6 min on 2 shared cores
def test_tiny_run_reports_every_size_budget_and_arm_with_the_width_arms_own_control(report):
    studies = report["studies"]
    assert [(s["size"], s["tokens_per_parameter"]) for s in studies] == [
        (size, budget) for size in SETTINGS["quick"].sizes for budget in (0.1, 0.05)
    ]
    for study in studies:
        kinds = [run["kind"] for run in study["runs"]]
        assert kinds == ["scratch", "control", "grown", "control", "grown"]
        width_small, big = study["models"]["width_small"], study["models"]["big"]
        assert 2 * width_small["hidden_size"] == big["hidden_size"] and width_small["layers"] == big["layers"]
        width_control, width = study["runs"][3], study["runs"][4]
        assert "width control" in width_control["name"] and width["growth"]["method"] == "width"
        for seed_run, control in zip(width["seeds"], width_control["seeds"], strict=True):
            assert seed_run["layers_final"] == big["layers"] and abs(seed_run["loss_jump_at_growth"]) < 1e-4
            # Same seed, same batches, same schedule: the control IS the grown run up to growth (the reuse control).
            before = [p for p in seed_run["points"] if p["flops"] < seed_run["grown_at_flops"]]
            assert before and before == control["points"][: len(before)]
            reuse = seed_run["reuse"]
            assert reuse["val_loss_at_added_flops"]["keep_training_small"] == control["points"][-1]["val_loss"]
            assert reuse["added_flops"] == pytest.approx(seed_run["points"][-1]["flops"] - seed_run["grown_at_flops"])


@pytest.mark.slow
def test_tiny_run_has_rows_fits_and_a_verdict_per_size_and_exports_the_planners_points(report):
    rows = report["scale"]["rows"]
    assert len(rows) == 6 and all(set(row["arms"]) == {"stack@0.4", "width@0.5"} for row in rows)
    for row in rows:
        for arm in row["arms"].values():
            assert arm["flops_to_reach_scratch_final_loss"] == "not reached" or arm["fraction_of_scratch_flops"]
            assert len(arm["saving_per_seed"]) == 2
    assert {(fit["arm"], fit["tokens_per_parameter"]) for fit in report["scale"]["fits"]} == {
        (arm, budget) for arm in ("stack@0.4", "width@0.5") for budget in (0.1, 0.05)
    }
    assert all(row["size"] in report["scale"]["verdict"] for row in rows)
    assert report["machine"]["torch_threads"] >= 1 and len(report["load_average_1min_at_each_run_end"]) == 60
    assert report["config"]["base"] == asdict(GrowthSpeedupConfig(**report["config"]["base"]))
    points = report["points"]["points"]
    assert len(points) == 12 and report["points"]["command"] == report["command"]
    assert {p["method"] for p in points} == {"stack", "width"}


def test_width_arm_is_half_the_big_model_beside_its_own_control():
    growth = parse_growth("width@0.4")
    assert growth.spec.width == 2 and growth.spec.width_noise == WIDTH_NOISE and growth.to_dict()["method"] == "width"
    arms = plan_arms(GrowthSpeedupConfig(), [parse_growth("stack@0.4"), growth])
    assert [arm.kind for arm in arms] == ["scratch", "control", "grown", "control", "grown"]
    assert arms[2].control == arms[1].name and arms[4].control == arms[3].name
    narrow = arms[3].cfg
    assert (narrow.hidden_size, narrow.num_attention_heads, narrow.intermediate_size) == (24, 2, 64)
    assert arms[3].layers == arms[4].layers == arms[0].layers


def test_width_arm_of_an_odd_shape_is_a_clear_error():
    with pytest.raises(ConfigError, match="--num-attention-heads 3 must be even"):
        half_width(replace(GrowthSpeedupConfig(), hidden_size=48, num_attention_heads=3))


def _running(pid: int) -> bool:
    """Alive and not a zombie (a container's init may never reap an orphan that exited)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0] != "Z"
    except FileNotFoundError:
        return False


def _children(pid: int) -> set[int]:
    found = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def test_workers_stop_when_the_study_that_started_them_is_killed(tmp_path):
    """A study killed with SIGKILL never shuts its pool down: its workers must not train on for nobody."""
    script = tmp_path / "study.py"
    script.write_text(
        "import sys\n"
        f"sys.path.insert(0, {str(ROOT / 'tests' / 'recipes')!r})\n"
        "from pathlib import Path\n"
        "from test_growth_speedup import write_small_corpus\n"
        "from mtlm_recipes.compute_matched import load_corpus\n"
        "from mtlm_recipes.growth_scale import ScaleSetting, plan_studies, run_studies\n"
        "from mtlm_recipes.growth_speedup import GrowthSpeedupConfig\n"
        "if __name__ == '__main__':\n"  # the spawned workers import this file too
        "    base = GrowthSpeedupConfig(vocab_size=300)\n"
        f"    corpus = load_corpus(base, write_small_corpus(Path({str(tmp_path / 'corpus')!r})))\n"
        "    studies = plan_studies(ScaleSetting(('h48',), (20.0,), (0,), {'h48': ()}), base, corpus.vocab_size)\n"
        "    run_studies(studies, [0], corpus, workers=2)\n"  # minutes of training
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    study = subprocess.Popen([sys.executable, str(script)], cwd=ROOT, env=env)
    workers: set[int] = set()
    try:
        deadline = time.time() + 120
        while len(workers := _children(study.pid)) < 3 and time.time() < deadline:  # 2 workers, 1 resource tracker
            time.sleep(0.5)
        time.sleep(5)  # into their training
        assert len(workers) == 3 and all(map(_running, workers)), "the pool's workers did not start"
        study.kill()
        study.wait()
        deadline = time.time() + 30
        while (alive := [pid for pid in workers if _running(pid)]) and time.time() < deadline:
            time.sleep(0.5)
        assert not alive, f"workers {alive} outlived the killed study"
    finally:
        study.kill()
        for pid in filter(_running, workers):
            os.kill(pid, signal.SIGKILL)
