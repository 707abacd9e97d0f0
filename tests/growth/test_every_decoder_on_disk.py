"""Every decoder-only architecture of the causal-LM mapping grown by every depth method on disk and mid-training.

The same model types and methods as `test_every_decoder.py` (skipped there, skipped here, with the reason).
A refusal of growth_ops in memory must be a refusal here too (xfail with its reason); the faults these
checks found are listed in `DISK_FAULTS` and `OPTIMIZER_FAULTS`, each with its reason.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig
from zoo import (
    FAST_MAPPED,
    assert_same_tensors,
    build_small,
    causal_lm_types,
    input_ids,
    logits,
    read_tensors,
    skip_unless_built,
    spec_for,
    xfail_refusal,
)

from growth_ops import GrowthSpec, discover_anatomy, grow, grow_checkpoint
from growth_ops.midrun import TrainingGrowth

METHODS = ["stack", "interleave", "identity", "identity-end", "dus"]
FAST_ON_DISK = [*FAST_MAPPED, "gemma3"]
"""Grown by default (the rest is marked `zoo`): one per family kind, and one that saves under legacy names."""
# Known faults of growth_ops that these tests found, each expected to fail as described until it is fixed (strict:
# a fix shows as a failure here, so the entry goes), and refusals of growth on disk that growth in memory does not
# make. Each: (exception, reason). None is known today.
DISK_FAULTS: dict[str, tuple[type[Exception], str]] = {}
OPTIMIZER_FAULTS: dict[str, tuple[type[Exception], str]] = {}


def _cases(faults: dict[str, tuple[type[Exception], str]]) -> list:
    """Every (model type, method); a known fault of the model type expected to fail, strictly."""
    params = []
    for model_type in causal_lm_types():
        for method in METHODS:
            marks = [] if model_type in FAST_ON_DISK and method in ("stack", "identity") else [pytest.mark.zoo]
            if model_type in faults:
                error, reason = faults[model_type]
                marks.append(pytest.mark.xfail(raises=error, strict=True, reason=reason))
            params.append(pytest.param(model_type, method, marks=marks, id=f"{model_type}-{method}"))
    return params


def _spec(model: torch.nn.Module, method: str) -> GrowthSpec:
    """The zoo's spec of `method` for `model` (identity-end places one copy per layer after the last)."""
    return spec_for(method, discover_anatomy(model).num_layers)


def train_step(model: torch.nn.Module, optimizer: torch.optim.Optimizer, ids: torch.Tensor) -> torch.Tensor:
    """One AdamW step on next-token loss; the loss from the logits, as not every family takes `labels`.

    In train mode: in eval mode rwkv rescales its weights in place, which autograd refuses.
    """
    model.train()
    scores = model(ids).logits
    loss = F.cross_entropy(scores[:, :-1].reshape(-1, scores.shape[-1]).float(), ids[:, 1:].reshape(-1))
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return loss.detach()


@pytest.mark.parametrize("model_type, method", _cases(DISK_FAULTS))
def test_disk_growth_equals_in_memory_growth_and_loads_back(model_type, method, tmp_path):
    skip_unless_built(model_type)
    model = build_small(model_type)
    try:
        spec = _spec(model, method)
    except ValueError as error:
        # No layer list (blt, xlm): refused on disk alike (test_every_decoder_rules).
        xfail_refusal(model_type, method, error)
    model.save_pretrained(tmp_path / "src")
    try:
        grow(model, spec)
    except ValueError as error:
        with pytest.raises(ValueError) as refusal:
            grow_checkpoint(tmp_path / "src", tmp_path / "disk", spec)
        if not method.startswith("identity"):
            assert str(refusal.value) == str(error)
        # On disk the identity probe runs on random weights (its measured differences differ), before the checks
        # growth in memory makes first: the refusal may name another of the reasons that stop it.
        assert not (tmp_path / "disk").exists()
        xfail_refusal(model_type, method, error)
    model.save_pretrained(tmp_path / "memory")
    grow_checkpoint(tmp_path / "src", tmp_path / "disk", spec)
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "disk"))
    # Compared as loaded: a config's own round trip can fill a default (moshi's audio_vocab_size: None -> 2048).
    config, expected = (AutoConfig.from_pretrained(tmp_path / f).to_dict() for f in ("disk", "memory"))
    assert {**config, "_name_or_path": ""} == {**expected, "_name_or_path": ""}
    # The model's own class: some families save a config AutoModelForCausalLM does not map (mllama's text config).
    loaded = type(model).from_pretrained(tmp_path / "disk", attn_implementation="eager").eval()
    ids = input_ids()
    # Not bit for bit (the tensors are, above): loaded tensors lie at their offsets in the mapped file, and a
    # CPU kernel can round differently on data aligned differently (qwen3_next: 6e-8).
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("model_type, method", _cases(OPTIMIZER_FAULTS))
def test_growth_with_optimizer_state_trains_on(model_type, method):
    skip_unless_built(model_type)
    model = build_small(model_type)
    ids = input_ids()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, optimizer, ids)
    try:
        optimizer = TrainingGrowth(model, optimizer, _spec(model, method)).apply()
    except ValueError as error:
        xfail_refusal(model_type, method, error)
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(held) == len(set(held))
    assert set(held) == set(trainable)
    assert torch.isfinite(train_step(model, optimizer, ids))
