"""The MTLM2 example card, hub_cards/examples/m2/, as a real default `make m2-mini` run rendered it: every figure in
its metadata and body is the run's results.json beside it, and the template repeats none of the original card's
claims that cannot hold (ORIGINALS.md)."""

import json
from dataclasses import asdict
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from mtlm_recipes.cards import TEMPLATES, format_duration
from mtlm_recipes.m2_jax.config import load_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "hub_cards" / "examples" / "m2"
PERPLEXITY_METRICS = ("token_perplexity", "bits_per_byte", "word_perplexity")


@pytest.fixture(scope="module")
def results() -> dict:
    return json.loads((EXAMPLE / "results.json").read_text())


@pytest.fixture(scope="module")
def card() -> ModelCard:
    return ModelCard.load(EXAMPLE / "README.md")


def test_the_metadata_holds_exactly_the_figures_the_run_measured(card, results):
    perplexity = results["perplexity"]
    entries = card.data.eval_results
    assert sorted(entry.metric_type for entry in entries) == sorted(PERPLEXITY_METRICS)
    for entry in entries:
        assert entry.metric_value == perplexity[entry.metric_type]
        assert entry.dataset_name == perplexity["dataset"]["name"]
        assert entry.dataset_split == perplexity["dataset"]["split"]
        assert entry.metric_config == f"sliding window {perplexity['max_length']}, stride {perplexity['stride']}"
        assert entry.verified is False
    assert perplexity["tokenizer"]["name"] in next(
        e.metric_name for e in entries if e.metric_type == "token_perplexity"
    )


def test_the_body_states_the_runs_figures_machine_date_and_command(card, results):
    perplexity, training = results["perplexity"], results["training"]
    figures = [
        f"{perplexity['token_perplexity']:.2f}",
        f"{perplexity['bits_per_byte']:.4f}",
        f"{perplexity['word_perplexity']:.2f}",
        f"{perplexity['scored_tokens']:,} tokens scored",
        f"{perplexity['bytes']:,} bytes",
        perplexity["dataset"]["name"],
        f"{training['tokens_trained']:,}",
        f"{training['steps']:,} of {training['tokens_per_step']:,} tokens",
        training["hardware"],
        training["date"],
        f"**Training time:** {format_duration(training['training_time_hours'])} (wall clock)",
        f"`{results['command']}`",
    ]
    missing = [figure for figure in figures if figure not in card.text]
    assert not missing, f"not on the card: {missing}"
    assert training["date"] == results["date"] and training["command"] == results["command"]
    assert results["parity"]["max_abs_diff"] <= results["parity"]["tolerance"]


def test_the_example_is_the_default_run(results):
    assert results["command"] == "python examples/m2_jax/mini.py"
    default = load_config(ROOT / "examples" / "m2_jax" / "mini.yaml")
    assert results["config"] == json.loads(json.dumps(asdict(default)))
    assert (EXAMPLE / "training_loss.png").stat().st_size > 0


def test_the_m2_template_repeats_none_of_the_original_cards_claims():
    template = (TEMPLATES / "m2.md").read_text()
    # The original's figures (ORIGINALS.md): its WikiText-2 token perplexity, size and token count.
    for claim in ("54.21", "41.5", "13.4", "51,060", "GPT-2 (", "WikiText-2 perplexity of"):
        assert claim not in template, claim
    # Wherever it shows a token perplexity, bits per byte stands beside it.
    assert template.count("Token perplexity (") == template.count("| Bits per byte |")
