"""WikiText-2 sliding-window perplexity (mtlm_recipes.eval.perplexity, examples/eval/perplexity.py) against direct
computations."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModelForCausalLM

import mtlm_hf
from mtlm_recipes.eval import perplexity

ROOT = Path(__file__).resolve().parents[2]
WIKITEXT_EXCERPT = ROOT / "tests/data/eval/wikitext2/wikitext-2-raw-v1.test.hf-joined.excerpt.txt"

CONTEXT, SEQ_LEN = 64, 300
# Two sliding-attention layers of window 8: a token's prediction depends on at most 2 * 8 earlier tokens, so
# windows overlapping by >= 16 tokens give every scored token its whole context.
RECEPTIVE_FIELD = 16


def _model(**overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    # A wide init makes predictions depend strongly on context, so a truncated context shows in the nll.
    config = mtlm_hf.MTLMConfig.from_preset("m1-tiny", max_position_embeddings=CONTEXT, initializer_range=0.3)
    for key, value in overrides.items():
        setattr(config, key, value)
    return AutoModelForCausalLM.from_config(config).double().eval()


@pytest.fixture(scope="module")
def context_limited_model():
    return _model(layer_types=["sliding_attention"] * 2, sliding_window=8)


@pytest.fixture(scope="module")
def token_ids():
    return torch.randint(3, 99, (1, SEQ_LEN), generator=torch.Generator().manual_seed(1))


@torch.no_grad()
def _direct_nll(model, ids: torch.Tensor) -> float:
    """Sum of -log p(token | all earlier tokens), from one forward pass over the whole sequence."""
    log_probs = torch.log_softmax(model(ids).logits[0, :-1].double(), dim=-1)
    return -log_probs.gather(1, ids[0, 1:, None]).sum().item()


@pytest.mark.parametrize("stride", [6, 24, CONTEXT - RECEPTIVE_FIELD])
def test_windows_equal_one_full_pass_when_every_token_keeps_its_whole_context(
    context_limited_model, token_ids, stride
):
    nll, scored = perplexity.sliding_window_nll(context_limited_model, token_ids, max_length=CONTEXT, stride=stride)
    assert scored == SEQ_LEN - 1
    assert nll == pytest.approx(_direct_nll(context_limited_model, token_ids), rel=1e-6)


def test_windows_overlapping_less_than_the_receptive_field_differ_from_the_full_pass(context_limited_model, token_ids):
    """The control for the test above: with context cut short the sums must differ, so agreement means something."""
    nll, _ = perplexity.sliding_window_nll(context_limited_model, token_ids, max_length=CONTEXT, stride=CONTEXT - 4)
    full = _direct_nll(context_limited_model, token_ids)
    assert abs(nll - full) / full > 1e-4


def test_stride_equal_to_the_context_scores_disjoint_chunks(token_ids):
    """With no overlap each window is an independent chunk whose first token goes unscored, as in the guide."""
    model = _model()
    nll, scored = perplexity.sliding_window_nll(model, token_ids, max_length=CONTEXT, stride=CONTEXT)
    chunks = token_ids.split(CONTEXT, dim=1)
    assert scored == SEQ_LEN - len(chunks)
    assert nll == pytest.approx(sum(_direct_nll(model, chunk) for chunk in chunks), rel=1e-6)


def test_stride_beyond_the_window_is_refused(context_limited_model, token_ids):
    with pytest.raises(ValueError, match="stride"):
        perplexity.sliding_window_nll(context_limited_model, token_ids, max_length=CONTEXT, stride=CONTEXT + 1)


def test_a_text_source_must_be_chosen():
    with pytest.raises(ValueError, match="--text-file"):
        perplexity.load_wikitext()


def test_cli_reports_token_perplexity_bits_per_byte_and_word_perplexity(tmp_path):
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset("m1-tiny", vocab_size=32000, max_position_embeddings=1024)
    folder = tmp_path / "model"
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    mtlm_hf.mistral_tokenizer().save_pretrained(folder)
    out = tmp_path / "ppl.json"
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples/eval/perplexity.py"), str(folder), "--text-file", str(WIKITEXT_EXCERPT)]
        + ["--tokenizer-name", "Mistral-7B-v0.1", "--out", str(out)],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(out.read_text())
    text = WIKITEXT_EXCERPT.read_text(encoding="utf-8")
    assert (report["max_length"], report["stride"]) == (1024, 512)  # the model's context, the default stride
    assert report["tokenizer"]["name"] == "Mistral-7B-v0.1" and report["tokenizer"]["vocab_size"] == 32000
    assert report["tokenizer"]["first_token_is_bos"] and report["scored_tokens"] == report["tokens"] - 1
    assert report["tokens"] > 1024  # more than one window
    assert (report["bytes"], report["words"]) == (len(text.encode("utf-8")), len(text.split()))
    nll = report["total_nll_nats"]
    assert report["token_perplexity"] == pytest.approx(math.exp(nll / report["scored_tokens"]))
    assert report["bits_per_byte"] == pytest.approx(nll / math.log(2) / report["bytes"])
    assert report["word_perplexity"] == pytest.approx(math.exp(nll / report["words"]))
    # A random model over 32000 tokens is near-uniform: about ln(32000) nats a token.
    assert abs(nll / report["scored_tokens"] - math.log(32000)) < 1.0
