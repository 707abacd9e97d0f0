"""Every decoder-only architecture of the causal-LM mapping grown by stack on disk and with its optimizer.

The same model types as `test_every_decoder.py` (skipped there, skipped here, with the reason); one stack
growth per model type and check, to keep the `zoo` set short. A refusal of growth_ops in memory must be a
refusal here too (xfail with its reason); the faults these checks found are listed in `DISK_FAULTS` and
`OPTIMIZER_FAULTS`, each with its reason.
"""

import pytest
import torch
import torch.nn.functional as F
from transformers import AutoConfig
from zoo import (
    SPECS,
    assert_same_tensors,
    build_small,
    causal_lm_types,
    input_ids,
    logits,
    read_tensors,
    skip_unless_built,
    xfail_refusal,
)

from growth_ops import grow, grow_checkpoint
from growth_ops.midrun import TrainingGrowth

METHOD = "stack"
_LEGACY_NAMES = (
    "grow_checkpoint looks for the layers under the model's module names, but save_pretrained writes this family "
    "under its legacy names (transformers' weight renaming), and the ValueError says to re-save with save_pretrained"
)
_SLICE_MOMENTS = (
    "TrainingGrowth regrows the parameters with one slice per layer outside the layer list (embed_tokens_per_layer, "
    "per_layer_model_projection) but not their AdamW moments: the next step fails on the old shapes"
)
# Known faults of growth_ops that these tests found, each expected to fail as described until it is fixed (strict:
# a fix shows as a failure here, so the entry goes), and refusals of growth on disk that growth in memory does not
# make. Each: (exception, reason).
DISK_FAULTS = {
    "exaone": (ValueError, _LEGACY_NAMES),
    "fuyu": (ValueError, _LEGACY_NAMES),
    "gemma3": (ValueError, _LEGACY_NAMES),
    "got_ocr2": (ValueError, _LEGACY_NAMES),
    "nemotron_h": (ValueError, _LEGACY_NAMES),
    # Refused in memory (a per-layer weight growth cannot remap), and on disk for the legacy names instead.
    **dict.fromkeys(["inkling2_loop_text", "inkling2_text"], (AssertionError, _LEGACY_NAMES)),
    **dict.fromkeys(
        ["gemma3n_text", "gemma4", "gemma4_text"],
        (
            ValueError,
            "grow_checkpoint refuses: it does not regrow parameters with one slice per layer outside the "
            "layer list (growth in memory does)",
        ),
    ),
}
OPTIMIZER_FAULTS = {
    **dict.fromkeys(["gemma3n_text", "gemma4", "gemma4_text"], (RuntimeError, _SLICE_MOMENTS)),
    "recurrent_gemma": (
        RuntimeError,
        "after a training step its recurrent layers hold their last states with their autograd graph, and growth's "
        "deepcopy of a layer fails on such non-leaf tensors",
    ),
}


def _model_types(faults: dict[str, tuple[type[Exception], str]]) -> list:
    params = []
    for model_type in causal_lm_types():
        marks = [pytest.mark.zoo]
        if model_type in faults:
            error, reason = faults[model_type]
            marks.append(pytest.mark.xfail(raises=error, strict=True, reason=reason))
        params.append(pytest.param(model_type, marks=marks))
    return params


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


@pytest.mark.parametrize("model_type", _model_types(DISK_FAULTS))
def test_disk_growth_equals_in_memory_growth_and_loads_back(model_type, tmp_path):
    skip_unless_built(model_type)
    model = build_small(model_type)
    model.save_pretrained(tmp_path / "src")
    try:
        grow(model, SPECS[METHOD])
    except ValueError as error:
        with pytest.raises(ValueError) as refusal:
            grow_checkpoint(tmp_path / "src", tmp_path / "disk", SPECS[METHOD])
        assert str(refusal.value) == str(error)
        assert not (tmp_path / "disk").exists()
        xfail_refusal(model_type, METHOD, error)
    model.save_pretrained(tmp_path / "memory")
    grow_checkpoint(tmp_path / "src", tmp_path / "disk", SPECS[METHOD])
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


@pytest.mark.parametrize("model_type", _model_types(OPTIMIZER_FAULTS))
def test_growth_with_optimizer_state_trains_on(model_type):
    skip_unless_built(model_type)
    model = build_small(model_type)
    ids = input_ids()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    train_step(model, optimizer, ids)
    try:
        optimizer = TrainingGrowth(model, optimizer, SPECS[METHOD]).apply()
    except ValueError as error:
        xfail_refusal(model_type, METHOD, error)
    held = [id(p) for group in optimizer.param_groups for p in group["params"]]
    trainable = [id(p) for p in model.parameters() if p.requires_grad]
    assert len(held) == len(set(held))
    assert set(held) == set(trainable)
    assert torch.isfinite(train_step(model, optimizer, ids))
