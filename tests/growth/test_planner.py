"""The growth planner (`growth_ops.planner`, `mtlm-grow plan`): G_stack's own worked examples, our shipped measured
points, "unknown" outside both, and clear errors for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from growth_ops.planner import (
    GSTACK_FITTED_PARAMETERS,
    gstack_small_model_tokens,
    load_measured_points,
    parse_count,
    plan_growth_budget,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    "parameters, tokens, expected",
    [(7e9, 2e12, 11.1e9), (8e9, 15e12, 6.58e9), (70e9, 2e12, 42.48e9)],
    ids=["llama2-7b", "llama3-8b", "llama2-70b"],
)
def test_gstack_formula_gives_its_papers_worked_examples(parameters, tokens, expected):
    assert gstack_small_model_tokens(parameters, 6 * parameters * tokens) == pytest.approx(expected, rel=0.01)


def test_inside_gstacks_range_the_answer_is_gstacks_with_its_source():
    plan = plan_growth_budget("7B", "2T")
    assert plan.grow.value == "yes" and plan.factor.value == 4
    assert plan.at_tokens.value == pytest.approx(11.1e9, rel=0.01)
    assert plan.from_size.value == pytest.approx(7e9 / 4)
    for answer in (plan.grow, plan.from_size, plan.at_tokens, plan.factor, plan.expected_saving):
        assert "G_stack" in answer.source
    assert "fitted range" in plan.at_tokens.source


@pytest.mark.parametrize("parameters, tokens, formula", [("8B", "15T", "6.58e+09"), ("70B", "2T", "4.25e+10")])
def test_outside_every_range_the_answer_is_unknown_and_the_formula_is_labelled_an_extrapolation(
    parameters, tokens, formula
):
    plan = plan_growth_budget(parameters, tokens)
    assert plan.parameters > GSTACK_FITTED_PARAMETERS[1]
    for answer in (plan.grow, plan.from_size, plan.at_tokens, plan.factor, plan.expected_saving):
        assert answer.value == "unknown" and "outside" in answer.source
    assert any(formula in note and "extrapolation" in note for note in plan.notes)


def test_between_our_sizes_and_gstacks_the_issues_example_is_unknown_but_keeps_the_given_factor():
    plan = plan_growth_budget("200M", "3.5B", from_params="100M", from_tokens="2B")
    assert plan.grow.value == "unknown" and plan.expected_saving.value == "unknown"
    assert plan.factor.value == 2 and plan.from_size.value == 1e8 and "given" in plan.factor.source


def test_reuse_case_inside_gstacks_range_says_the_reuse_saving_was_not_measured():
    plan = plan_growth_budget("1.1B", "22B", from_params="275M", from_tokens="30B")
    assert plan.grow.value == "yes" and "keep training the small model: not measured" in plan.grow.source
    assert plan.expected_saving.value == "unknown" and plan.factor.value == pytest.approx(4)
    assert any("Liew and Kato" in note for note in plan.notes)  # 30B > the formula's tokens


def test_shipped_points_carry_their_provenance():
    data = load_measured_points()
    assert (ROOT / data["source"]).is_file(), data["source"]
    assert data["command"].startswith("python benchmarks/growth_scale.py") and data["date"] and data["machine"]
    assert {p["tokens_per_parameter"] > 0 and p["factor"] == 2 for p in data["points"]} == {True}


@pytest.mark.parametrize("index", range(len(load_measured_points()["points"])))
def test_at_each_measured_point_the_answer_is_that_measurement(index):
    points = load_measured_points()["points"]
    point = points[index]
    plan = plan_growth_budget(point["target_parameters"], point["tokens"])
    assert "mtlm growth study" in plan.grow.source
    same = [p for p in points if p["size"] == point["size"] and p["tokens"] == point["tokens"]]
    saved = [p for p in same if p["saving_min"] is not None and p["saving_min"] > 0]
    measured = all(p["big_from_scratch_beats_control"] for p in same)
    assert plan.grow.value == ("yes" if measured and saved else "no")
    if plan.grow.value == "yes":
        assert plan.expected_saving.value == max(p["saving_mean"] for p in saved) and plan.factor.value == 2
    reuse = plan_growth_budget(point["target_parameters"], point["tokens"], from_params=point["target_parameters"] / 2)
    grown_won_every_seed = any(p["reuse_seeds_won_by"]["grown"] == p["seeds"] for p in same)
    assert reuse.grow.value == ("yes" if grown_won_every_seed else "no") and "reuse view" in reuse.grow.source


@pytest.mark.parametrize("text, value", [("200M", 2e8), ("3.5B", 3.5e9), ("2T", 2e12), ("7e9", 7e9), ("160k", 16e4)])
def test_counts_parse_with_suffixes(text, value):
    assert parse_count(text) == value


@pytest.mark.parametrize("text", ["200X", "M", "", "1.2.3B"])
def test_a_count_that_is_not_one_names_the_flag_and_the_form(text):
    with pytest.raises(ValueError, match=r"--params .* not a count.*200M"):
        parse_count(text, "--params")


@pytest.mark.parametrize("text", ["-5", "0", "-1B", float("inf")])
def test_a_count_must_be_positive(text):
    with pytest.raises(ValueError, match="--tokens must be a positive count"):
        parse_count(text, "--tokens")


def test_an_existing_model_must_be_smaller_and_its_tokens_need_its_size():
    with pytest.raises(ValueError, match="--from-params .* must be smaller than --params"):
        plan_growth_budget("1B", "20B", from_params="2B")
    with pytest.raises(ValueError, match="give its size with --from-params"):
        plan_growth_budget("1B", "20B", from_tokens="2B")


def run_plan(*args):
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    command = [sys.executable, "-m", "growth_ops.cli", "plan", *args]
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=env, timeout=120)


def test_cli_json_parses_and_matches_the_function():
    result = run_plan("--params", "7B", "--tokens", "2T", "--json")
    assert result.returncode == 0, result.stderr
    answer = json.loads(result.stdout)
    assert answer == json.loads(json.dumps(plan_growth_budget("7B", "2T").to_dict()))
    assert answer["at_tokens"]["value"] == pytest.approx(11.1e9, rel=0.01)
    assert "G_stack" in answer["at_tokens"]["source"]


def test_cli_bad_input_is_one_line_with_exit_status_2():
    for args in (["--params", "200X", "--tokens", "1B"], ["--params", "1B", "--tokens", "2B", "--from-params", "3B"]):
        result = run_plan(*args)
        assert result.returncode == 2 and result.stdout == ""
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("mtlm-grow plan: error:")
