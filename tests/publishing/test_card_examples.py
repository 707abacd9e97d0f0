"""The example cards in hub_cards/examples/ were rendered by real runs: every number in a card's metadata, and the
run's figures in its text, are the numbers of the results JSON beside it."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard import metadata_load

from mtlm_recipes.cards import format_duration
from mtlm_recipes.compute_matched import ComputeMatchedConfig

EXAMPLES = Path(__file__).resolve().parents[2] / "hub_cards" / "examples"


@pytest.fixture(params=["m1"])
def example(request) -> tuple[Path, ModelCard, dict]:
    folder = EXAMPLES / request.param
    return folder, ModelCard.load(folder / "README.md"), json.loads((folder / "results.json").read_text())


def test_every_metric_in_the_cards_metadata_is_the_number_of_its_run(example):
    folder, card, results = example
    metrics = {r.metric_type: r.metric_value for r in card.data.eval_results}
    assert metrics == results["perplexity"]  # the same keys, the same floats, nothing rounded
    model_index = metadata_load(folder / "README.md")["model-index"]
    raw = {m["type"]: m["value"] for result in model_index[0]["results"] for m in result["metrics"]}
    assert raw == metrics


def test_the_card_states_its_runs_machine_date_command_and_comparison(example):
    _, card, results = example
    text, training, summary = card.text, results["training"], results["summary"]
    assert f"**Hardware:** {training['hardware']}" in text and f"**Date:** {training['date']}" in text
    assert f"**Command:** `{training['command']}`" in text and training["command"] == results["command"]
    assert f"**Tokens trained:** {training['tokens_trained']:,}" in text
    assert f"**Training time:** {format_duration(training['training_time_hours'])} (wall clock)" in text
    growth = training["growth"]
    assert f"{growth['from_layers']} -> {growth['to_layers']} layers at step {growth['at_step']:,}" in text
    for run in summary["runs"]:
        row = f"| {run['name']} | {run['layers']} | {run['parameters']:,} | {run['final_val_loss']:.3f} |"
        assert row in text
    assert f"{summary['flop_budget']:.3g} training FLOPs" in text
    assert summary["shows"] in text and summary["does_not_show"] in text
    assert f"| Bits per byte | {results['perplexity']['bits_per_byte']:.4f} |" in text


def test_the_example_is_the_default_quickstart(example):
    folder, _, results = example
    assert results["command"] == "python examples/quickstart.py"
    assert results["config"] == asdict(ComputeMatchedConfig())  # re-render it when the defaults change
    for plot in ("training_loss.png", results["summary"]["plot"]):
        assert (folder / plot).stat().st_size > 10_000
