"""The shared zoo of tiny random decoders (and the growth specs the growth tests apply to them).

`build(name)` gives a 3-layer model of one architecture with random weights, built offline from a
config, in eval mode with eager attention. Each architecture has a few per-layer settings switched
on, so that growth has something to remap. Import it as `from zoo import build` (tests/ is on
`sys.path` through the rootdir conftest).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModelForCausalLM, PreTrainedConfig, PreTrainedModel
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES

import mtlm_hf
from growth_ops import GrowthSpec, discover_anatomy, grow

VOCAB = 99
IDS = dict(pad_token_id=0, bos_token_id=1, eos_token_id=2)
LLAMA_LIKE = dict(
    vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=3, num_attention_heads=4, **IDS
)
SLIDING = ["full_attention", "sliding_attention", "sliding_attention"]
QWEN3_MOE = dict(
    LLAMA_LIKE, num_key_value_heads=2, head_dim=8, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16
)


@dataclass(frozen=True)
class TinyDecoder:
    """A tiny decoder: a transformers `model_type` and its settings, or an MTLM preset and overrides."""

    model_type: str
    settings: dict[str, Any] = field(default_factory=dict)
    preset: str | None = None

    def config(self, **overrides: Any) -> PreTrainedConfig:
        settings = {**self.settings, **overrides}
        if self.preset is not None:
            return mtlm_hf.MTLMConfig.from_preset(self.preset, **{"num_hidden_layers": 3, **IDS, **settings})
        return AutoConfig.for_model(self.model_type, **settings)


ZOO = {
    "llama": TinyDecoder("llama", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "mistral": TinyDecoder("mistral", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "mixtral": TinyDecoder(
        "mixtral", dict(LLAMA_LIKE, num_key_value_heads=2, num_local_experts=4, num_experts_per_tok=2)
    ),
    "qwen2": TinyDecoder(
        "qwen2",
        dict(LLAMA_LIKE, num_key_value_heads=2, use_sliding_window=True, sliding_window=4, max_window_layers=1),
    ),
    "qwen3": TinyDecoder(
        "qwen3",
        dict(
            LLAMA_LIKE,
            num_key_value_heads=2,
            head_dim=8,
            layer_types=SLIDING,
            use_sliding_window=True,
            sliding_window=4,
        ),
    ),
    "qwen3_moe": TinyDecoder("qwen3_moe", dict(QWEN3_MOE, mlp_only_layers=[1])),
    # An index list and a sparse step at once: layer 0 is dense by the step, layer 2 by the list.
    "qwen3_moe-sparse-step": TinyDecoder("qwen3_moe", dict(QWEN3_MOE, decoder_sparse_step=2, mlp_only_layers=[2])),
    "gemma": TinyDecoder("gemma", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8)),
    "gemma2": TinyDecoder("gemma2", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, sliding_window=4)),
    "gemma3_text": TinyDecoder(
        "gemma3_text", dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, sliding_window=4, layer_types=SLIDING[::-1])
    ),
    "phi3": TinyDecoder("phi3", dict(LLAMA_LIKE, num_key_value_heads=2)),
    "smollm3": TinyDecoder("smollm3", dict(LLAMA_LIKE, num_key_value_heads=2, no_rope_layers=[1, 0, 1])),
    "gpt2": TinyDecoder("gpt2", dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_inner=64, **IDS)),
    "gpt_neox": TinyDecoder("gpt_neox", dict(LLAMA_LIKE)),
    "opt": TinyDecoder("opt", dict(LLAMA_LIKE, ffn_dim=64, word_embed_proj_dim=32)),
    "falcon": TinyDecoder(
        "falcon", dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, **IDS)
    ),
    "bloom": TinyDecoder("bloom", dict(vocab_size=VOCAB, hidden_size=32, n_layer=3, n_head=4, **IDS)),
    "mtlm-m1": TinyDecoder("mtlm", preset="m1-tiny"),
    "mtlm-m2": TinyDecoder("mtlm", preset="m2-tiny"),
    "mtlm-sliding": TinyDecoder("mtlm", dict(layer_types=SLIDING, sliding_window=4), preset="m1-tiny"),
}

# Blocks whose residual writers the name table does not know, or that cannot be an identity: growth_ops must find
# their writers by probing (gpt_oss's expert biases, codegen's fc_out, ctrl's ffn.2, ...) or refuse with the reason.
GENERIC = dict(LLAMA_LIKE, num_key_value_heads=2, head_dim=8, max_position_embeddings=64)
GPT_LIKE = dict(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, **IDS)
PROBED = {
    "gpt_oss": TinyDecoder("gpt_oss", dict(GENERIC, num_local_experts=4, num_experts_per_tok=2)),
    "doge": TinyDecoder("doge", GENERIC),
    "codegen": TinyDecoder("codegen", dict(GPT_LIKE, rotary_dim=4)),
    "gptj": TinyDecoder("gptj", dict(GPT_LIKE, rotary_dim=4)),
    "xglm": TinyDecoder("xglm", dict(GENERIC, d_model=32, ffn_dim=64, num_layers=3, attention_heads=4)),
    "biogpt": TinyDecoder("biogpt", GENERIC),
    "ctrl": TinyDecoder("ctrl", dict(GPT_LIKE, dff=64)),
    "jetmoe": TinyDecoder("jetmoe", GENERIC),
    "diffllama": TinyDecoder("diffllama", GENERIC),
    "openai-gpt": TinyDecoder("openai-gpt", GPT_LIKE),
    "minimax": TinyDecoder("minimax", dict(GENERIC, num_local_experts=4, num_experts_per_tok=2)),
}
"""Identity growth checked by probing the block (tests/growth/test_identity_probe.py)."""

IN_MEMORY_ARCHITECTURES = [name for name in ZOO if name != "qwen3_moe-sparse-step"]
"""Grown in memory (tests/growth/test_growth_models.py)."""

# Each with something growth must get right on disk: per-layer lists (layer_types, no_rope_layers), index
# lists and a sparse step (qwen3_moe), tensors whose names on disk differ from the model's (mixtral's and
# qwen3_moe's per-expert weights, gpt_neox's embed_out), tied embeddings (gemma3_text, gpt2, MTLM M1),
# another layer path (gpt2's transformer.h) and custom code (MTLM).
ON_DISK_ARCHITECTURES = [
    "llama",
    "qwen2",
    "gemma3_text",
    "qwen3_moe-sparse-step",
    "mixtral",
    "smollm3",
    "gpt2",
    "gpt_neox",
    "mtlm-m1",
    "mtlm-m2",
]
"""Grown on disk and compared with growth in memory (tests/growth/test_grow_checkpoint.py)."""

SPECS = {
    "stack": GrowthSpec(depth=2),
    "interleave": GrowthSpec(num_layers=5, depth_method="interleave"),  # non-integer growth: 3 -> 5
    "identity": GrowthSpec(depth=2, depth_method="identity"),
    "dus": GrowthSpec(depth=2, depth_method="dus", overlap=1),  # SOLAR: two copies, each without `overlap` layers
    "explicit": GrowthSpec(layer_map=(0, 1, 2, 1, 2)),
}
"""One growth spec per depth method, for the 3-layer models of the zoo."""


def build(name: str, dtype: torch.dtype = torch.float32, seed: int = 0, **overrides: Any) -> PreTrainedModel:
    """A tiny random model of zoo entry `name`, in eval mode with eager attention."""
    torch.manual_seed(seed)
    config = {**ZOO, **PROBED}[name].config(**overrides)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager", dtype=dtype).eval()


def input_ids(batch: int = 2, length: int = 7) -> torch.Tensor:
    return torch.randint(3, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def logits(model: torch.nn.Module, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(ids).logits


def read_tensors(folder: str | Path) -> dict[str, torch.Tensor]:
    """Every tensor of a safetensors checkpoint folder, by name."""
    tensors = {}
    for path in sorted(Path(folder).glob("*.safetensors")):
        tensors.update(load_file(path))
    return tensors


def assert_same_tensors(expected: dict[str, torch.Tensor], actual: dict[str, torch.Tensor]) -> None:
    """Same names, dtypes, shapes and values, bit for bit."""
    assert sorted(actual) == sorted(expected)
    for name, tensor in expected.items():
        assert actual[name].dtype == tensor.dtype, name
        assert actual[name].shape == tensor.shape, name
        assert torch.equal(actual[name], tensor), name


# One small config for every family: the names of the common settings under each family's spelling.
SMALL = dict(
    GENERIC,
    n_embd=32,
    n_layer=3,
    n_head=4,
    n_positions=64,
    d_model=32,
    num_layers=3,
    rotary_dim=4,
    num_local_experts=4,
    num_experts=4,
    num_experts_per_tok=2,
    moe_intermediate_size=16,
)
FAST_MAPPED = ["llama", "gpt2", "gpt_oss", "codegen", "ctrl", "jetmoe"]
"""One architecture per family kind grown from the mapping by default; the rest is `@pytest.mark.slow`."""


class NotDecoderOnly(ValueError):
    """A model type of the causal-LM mapping that is not a decoder-only model (excluded by rule)."""


def causal_lm_types() -> list[str]:
    """Every `model_type` of the installed transformers' causal-LM mapping."""
    return sorted(MODEL_FOR_CAUSAL_LM_MAPPING_NAMES)


def build_small(model_type: str, seed: int = 0) -> PreTrainedModel:
    """A small random model of `model_type` from `SMALL`.

    Raises:
        NotDecoderOnly: For an encoder-decoder or an encoder (not a decoder-only model), with the reason.
        Exception: Whatever transformers raises where `SMALL` does not build the family.
    """
    config = AutoConfig.for_model(model_type, **SMALL)
    if getattr(config, "is_encoder_decoder", False):
        raise NotDecoderOnly("an encoder-decoder (config.is_encoder_decoder=True), not a decoder-only model")
    if hasattr(config, "is_decoder"):
        # In transformers 5 only encoder families that can be switched to decoding keep `is_decoder`.
        raise NotDecoderOnly("an encoder run as a decoder (its config has `is_decoder`), not a decoder-only model")
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


def growth_failure(model_type: str, method: str) -> str | None:
    """Grow a small `model_type` by `SPECS[method]` and check it whole; `None`, or why it does not grow whole.

    Checked: layer count, `layer_idx` on every module, cached generation equal to uncached, and for
    identity growth the logits (fp32, 1e-5).
    """
    model = build_small(model_type)
    ids = input_ids()
    before = logits(model, ids)
    grow(model, SPECS[method])
    plan = SPECS[method].plan_depth(3)
    layers = model.get_submodule(discover_anatomy(model).layers_path)
    if len(layers) != plan.num_layers:
        return f"{len(layers)} layers after growth, expected {plan.num_layers}"
    for j, layer in enumerate(layers):
        indices = {m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)}
        if indices - {j}:
            return f"layer {j} holds layer_idx {sorted(indices)}"
    if method == "identity":
        change = float((logits(model, ids) - before).abs().max())
        if change > 1e-5:
            return f"identity growth changed the logits by {change:.3g}"
    mask = torch.ones_like(ids)
    kwargs = dict(max_new_tokens=3, do_sample=False, pad_token_id=0, attention_mask=mask)
    if not torch.equal(model.generate(ids, use_cache=True, **kwargs), model.generate(ids, use_cache=False, **kwargs)):
        return "cached generation differs from uncached"
    return None


def snapshot(model):
    """What a failed growth must leave as it was: config, tensors (and their storage), layer_idx, modules."""
    return (
        model.config.to_dict(),
        [(k, v.data_ptr(), v.clone()) for k, v in model.state_dict().items()],
        [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")],
        [id(m) for m in model.modules()],
    )


def assert_unchanged(model, before):
    config, tensors, indices, module_ids = before
    assert model.config.to_dict() == config
    state = model.state_dict()
    assert list(state) == [k for k, _, _ in tensors]
    for key, pointer, values in tensors:
        assert state[key].data_ptr() == pointer and torch.equal(state[key], values), key
    assert [(n, m.layer_idx) for n, m in model.named_modules() if hasattr(m, "layer_idx")] == indices
    assert [id(m) for m in model.modules()] == module_ids
