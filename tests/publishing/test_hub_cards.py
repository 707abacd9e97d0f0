"""Model cards (mtlm_recipes.cards, hub_cards/build_card.py): every number in the card's metadata comes from the
result files."""

import json
import re

import pytest
import torch
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM

import mtlm_hf
from mtlm_recipes import cards as build_card

HUB_DATASETS = {
    "winogrande": ("allenai/winogrande", "winogrande_xl", "validation"),
    "copa": ("aps/super_glue", "copa", "validation"),
    "boolq": ("aps/super_glue", "boolq", "validation"),
    "wsc273": ("lighteval/winograd_wsc", "wsc273", "test"),
    "wsc": ("aps/super_glue", "wsc.fixed", "validation"),
    "truthfulqa_mc1": ("truthfulqa/truthful_qa", "multiple_choice", "validation"),
    "truthfulqa_mc2": ("truthfulqa/truthful_qa", "multiple_choice", "validation"),
    "arc_easy": ("allenai/ai2_arc", "ARC-Easy", "test"),
    "arc_challenge": ("allenai/ai2_arc", "ARC-Challenge", "test"),
    "openbookqa": ("allenai/openbookqa", "main", "test"),
    "hellaswag": ("Rowan/hellaswag", None, "validation"),
    "agieval_aqua_rat": ("hails/agieval-aqua-rat", None, "test"),
    "commonsense_qa": ("tau/commonsense_qa", None, "validation"),
}
WITHOUT_ACC_NORM = {"winogrande", "wsc273", "truthfulqa_mc2"}


def _benchmarks(limit=None) -> dict:
    """A results JSON in run_benchmarks.py's schema, with distinct made-up scores."""
    tasks = {}
    for i, (task, (path, name, split)) in enumerate(HUB_DATASETS.items()):
        result = {"acc": 0.2 + i / 100 + 0.0001, "acc_stderr": 0.01, "items": 100 + i, "rows": 100 + i}
        if task not in WITHOUT_ACC_NORM:
            result |= {"acc_norm": 0.5 + i / 100 + 0.0002, "acc_norm_stderr": 0.01}
        result |= {
            "hub_dataset": {"path": path, "name": name, "split": split},
            "deviations": [f"deviation of {task}"] if i % 2 else [],
            "prompts_identical": i % 3 != 0,
        }
        tasks[task] = result
    harness = {"lm_eval": "0.4.13", "limit": limit, "model_dtype": "float32", "device": "cpu"}
    return {"model": {}, "harness": harness, "tasks": tasks}


PERPLEXITY = {
    "token_perplexity": 123.456789,
    "bits_per_byte": 1.2345678,
    "word_perplexity": 456.789012,
    "scored_tokens": 330000,
    "bytes": 1290000,
    "words": 241211,
    "max_length": 1024,
    "stride": 512,
    "tokenizer": {"name": "Mistral-7B-v0.1", "name_or_path": "/m", "vocab_size": 32000},
}


@pytest.fixture
def files(tmp_path):
    """A saved tiny MTLM, result JSONs and training metadata with a loss log."""
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(mtlm_hf.MTLMConfig.from_preset("m1-tiny"))
    model.save_pretrained(tmp_path / "model")
    (tmp_path / "losses.jsonl").write_text(
        "".join(json.dumps({"step": s, "loss": 9 - s / 10}) + "\n" for s in range(40))
    )
    training = {
        "tokens_trained": 987_654_321,
        "hardware": "2 CPU cores",
        "training_time_hours": 0.25,
        "steps": 40,
        "growth": {"at_step": 20, "from_layers": 1, "to_layers": 2, "method": "stack"},
        "loss_log": "losses.jsonl",
    }
    paths = {"model": tmp_path / "model", "out": tmp_path / "card"}
    for name, content in (("training", training), ("benchmarks", _benchmarks()), ("perplexity", PERPLEXITY)):
        paths[name] = tmp_path / f"{name}.json"
        paths[name].write_text(json.dumps(content))
    paths["num_parameters"] = model.num_parameters()
    return paths


def _build(files, family="m1", benchmarks=True, perplexity=True) -> ModelCard:
    build_card.build_card(
        family,
        files["model"],
        "tester/MTLM-test",
        files["training"],
        files["benchmarks"] if benchmarks else None,
        files["perplexity"] if perplexity else None,
        files["out"],
    )
    return ModelCard.load(files["out"] / "README.md")  # parsed back from the written file


def _metrics(card: ModelCard) -> dict:
    return {(r.dataset_type, r.dataset_config, r.metric_type): r.metric_value for r in card.data.eval_results}


def _expected(benchmarks: dict, perplexity: dict | None) -> dict:
    expected = {}
    for task, result in benchmarks["tasks"].items():
        hub = result["hub_dataset"]
        for metric in ("acc", "acc_norm"):
            if metric in result:
                expected[(hub["path"], hub["name"], build_card.metric_type(task, metric))] = result[metric]
    for key in ("token_perplexity", "bits_per_byte", "word_perplexity") if perplexity else ():
        expected[("wikitext", "wikitext-2-raw-v1", key)] = perplexity[key]
    return expected


def test_card_metadata_carries_exactly_the_numbers_of_the_result_files(files):
    card = _build(files)
    assert _metrics(card) == _expected(json.loads(files["benchmarks"].read_text()), PERPLEXITY)
    assert card.data.model_name == "MTLM-test" and card.data.license == "mit"
    assert "trust_remote_code=True" in card.text and '"tester/MTLM-test"' in card.text
    assert "987,654,321" in card.text and "2 CPU cores" in card.text
    assert "**Training time:** 15.0 min (wall clock)" in card.text
    assert f"{files['num_parameters']:,}-parameter" in card.text
    assert "| ARC-Easy | 107 | 27.01 ± 1.00 | 57.02 |" in card.text  # the table shows the same numbers
    assert "| OpenBookQA † | 109 | 29.01 ± 1.00 | 59.02 |" in card.text  # † : prompts differ from lm-eval's
    assert "| Bits per byte | 1.2346 |" in card.text


def test_changing_the_results_changes_the_card(files):
    before = _metrics(_build(files))
    benchmarks = json.loads(files["benchmarks"].read_text())
    benchmarks["tasks"]["arc_easy"]["acc"] = 0.4321
    files["benchmarks"].write_text(json.dumps(benchmarks))
    after = _metrics(_build(files))
    key = ("allenai/ai2_arc", "ARC-Easy", "acc")
    assert (before[key], after[key]) == (0.2701, 0.4321)
    assert {k: v for k, v in after.items() if k != key} == {k: v for k, v in before.items() if k != key}
    assert "43.21" in (files["out"] / "README.md").read_text()


def test_card_repeats_none_of_the_original_cards_unsupported_claims(files):
    text = _build(files).content
    claims = ("7B TOTAL", "3.5 Billion", "A100", "12 HOUR", "OPT-125M", "TinyLlama", "GPT-2 (124M)", "54.21", "43.27")
    for claim in claims:
        assert claim not in text, claim
    assert "outperform" not in text.lower() and "significant performance leap" not in text.lower()


def test_smoke_runs_are_flagged_on_the_card(files):
    files["benchmarks"].write_text(json.dumps(_benchmarks(limit=3)))
    assert "Smoke run" in _build(files).text
    files["benchmarks"].write_text(json.dumps(_benchmarks()))
    assert "Smoke run" not in _build(files).text


def test_loss_plot_is_drawn_and_shown(files):
    card = _build(files)
    plot = files["out"] / build_card.LOSS_PLOT
    assert plot.stat().st_size > 5_000 and f"]({build_card.LOSS_PLOT})" in card.text
    assert "1 -> 2 layers at step 20" in card.text


def test_m2_card_from_perplexity_alone(files):
    card = _build(files, family="m2", benchmarks=False)
    assert _metrics(card) == _expected({"tasks": {}}, PERPLEXITY)
    assert "MTLM2" in card.text and "Mistral-7B-v0.1 tokenizer" in card.text
    assert "Zero-shot benchmarks" not in card.text


def test_a_card_needs_a_measured_result(files):
    with pytest.raises(ValueError, match="--benchmarks"):
        _build(files, benchmarks=False, perplexity=False)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.pop("tokens_trained"), "missing 'tokens_trained'"),
        (lambda m: m.update(tokens=5), "unknown field 'tokens'"),
        (lambda m: m.update(training_time_hours="12"), "'training_time_hours' must be"),
        (lambda m: m.update(tokens_trained=0), "must be positive"),
    ],
)
def test_bad_training_metadata_is_named(files, change, message):
    metadata = json.loads(files["training"].read_text())
    change(metadata)
    files["training"].write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=message):
        _build(files)


# The original cards' claims that cannot hold (../shared/ORIGINALS.md), as patterns a template must not contain.
CLAIMS_THAT_CANNOT_HOLD = {
    "M1's token count": r"\b(7|3\.5) ?(B|billion)\b|7,000,000,000|12 ?h(ours)?\b",
    "SuperGLUE WSC's 43.27% as Winograd": r"43\.27|Winograd(?! \((WSC273|SuperGLUE WSC)\))",
    "Winogrande 50.00%": r"50\.00",
    "M2's token perplexity 54.21": r"54\.21",
}


@pytest.mark.parametrize("template", ["m1.md", "sections.md"])
def test_templates_repeat_none_of_the_claims_that_cannot_hold(template):
    text = (build_card.TEMPLATES / template).read_text()
    for claim, pattern in CLAIMS_THAT_CANNOT_HOLD.items():
        assert re.search(pattern, text, flags=re.IGNORECASE) is None, claim
    winograd = [name for name in build_card.TASK_DISPLAY.values() if "Winograd" in name]
    assert winograd == ["Winograd (WSC273)", "Winograd (SuperGLUE WSC)"]  # the two are never one row


def test_a_card_shows_token_perplexity_only_beside_bits_per_byte(files):
    text = _build(files, benchmarks=False).text
    table = text[text.index("## Perplexity on") :]
    assert "Token perplexity (Mistral-7B-v0.1 tokenizer" in table and "| Bits per byte | 1.2346 |" in table


def test_the_card_says_what_was_measured_here_and_what_was_not(files):
    card = _build(files, perplexity=False)
    measured = card.text[card.text.index("## What was measured") : card.text.index("## Model")]
    assert "original MTLM1-200M" in measured and "zero-shot accuracy on 13 benchmarks" in measured
    not_measured = measured[measured.index("Not measured") :]
    assert "WikiText-2 perplexity" in not_measured and "zero-shot" not in not_measured
    text = _build(files, family="m2", benchmarks=False).text
    assert "original MTLM2-40M" in text and "- zero-shot benchmarks" in text
    assert "- WikiText-2 perplexity" not in text  # measured: the default perplexity data is WikiText-2


def test_perplexity_on_other_text_is_named_in_the_metadata_and_the_text(files):
    held_out = {"type": "shakespeare", "name": "Hamlet (held out)", "config": None, "split": "validation"}
    files["perplexity"].write_text(json.dumps({**PERPLEXITY, "dataset": {**held_out, "description": "Hamlet"}}))
    card = _build(files, benchmarks=False)
    assert {(r.dataset_type, r.dataset_name, r.dataset_split) for r in card.data.eval_results} == {
        ("shakespeare", "Hamlet (held out)", "validation")
    }
    assert "## Perplexity on Hamlet (held out)" in card.text and "- WikiText-2 perplexity" in card.text


def _comparison_results() -> dict:
    runs = [
        {"name": "4 layers from scratch", "layers": 4, "parameters": 1234567, "final_val_loss": 5.4321},
        {"name": "2 layers alone (control)", "layers": 2, "parameters": 765432, "final_val_loss": 5.1234},
        {"name": "2 -> 4 layers (this model)", "layers": 4, "parameters": 1234567, "final_val_loss": 5.3456},
    ]
    for run, reached in zip(runs, (2.0e12, 1.0e12, None), strict=True):
        run["flops_to_reach_scratch_final_loss"] = reached
    summary = {
        "flop_budget": 2.0e12,
        "flop_formula": "6 N per token",
        "regime_tokens_per_parameter": 0.123,
        "big_from_scratch_beats_small_control": False,
        "loss_jump_at_growth": 0.0789,
        "runs": runs,
        "shows": "What the run shows, in words.",
        "does_not_show": "What it does not show, in words.",
        "plot": "loss_vs_flops.png",
    }
    return {"summary": summary}


def _build_with_comparison(files, results: dict) -> ModelCard:
    files["results"] = files["out"].parent / "results.json"
    files["results"].write_text(json.dumps(results))
    build_card.build_card(
        "m1",
        files["model"],
        "tester/MTLM-test",
        files["training"],
        perplexity_path=files["perplexity"],
        out_dir=files["out"],
        comparison_path=files["results"],
        model_name="mtlm1-quickstart",
    )
    return ModelCard.load(files["out"] / "README.md")


def test_the_equal_compute_comparison_is_shown_with_its_regime_and_verdict(files):
    card = _build_with_comparison(files, _comparison_results())
    assert card.text.startswith("\n# mtlm1-quickstart") and card.data.model_name == "mtlm1-quickstart"
    assert "| 2 layers alone (control) | 2 | 765,432 | 5.123 | 1e+12 (50% of the budget) |" in card.text
    assert "| 2 -> 4 layers (this model) | 4 | 1,234,567 | 5.346 | not reached |" in card.text
    assert "jump by +0.079 nats" in card.text and "0.123 training tokens per parameter" in card.text
    assert "the small model alone beats the big model from scratch" in card.text
    assert "What the run shows, in words." in card.text and "What it does not show, in words." in card.text
    assert "](loss_vs_flops.png)" in card.text


def test_a_results_file_without_a_comparison_is_named(files):
    with pytest.raises(ValueError, match="no 'summary' entry"):
        _build_with_comparison(files, {"runs": []})
