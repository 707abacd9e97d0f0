# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""Import an original MTLM1 ("M1") training checkpoint, `global_step_N.pt`, as an `MTLMForCausalLM`.

The original model (`lhama.py` in MadrasLe/MTLM1) is Llama-shaped with other names: fused `qkv`, MLP `w1/w2/w3`
= gate/up/down, tied `lm_head`. It rotated interleaved pairs of each head's dimensions (`2j, 2j+1`), where
MTLM, like Llama, rotates halves (`j, j + head_dim/2`). Permuting the q and k rows of each head once (the
permutation of transformers' `convert_llama_weights_to_hf.py`) makes the standard rotation compute the same
scores, so the imported model keeps Llama parity and gives the original's logits.
"""

import os
import re
from collections.abc import Mapping
from typing import Any

import torch

from ._state_dict import config_from_sizes, model_from_state_dict, raise_for_mismatch
from .modeling_mtlm import MTLMForCausalLM

# `torch.compile` wraps the model as `_orig_mod`, DDP as `module`; real checkpoints often carry both.
_WRAPPER_PREFIXES = ("_orig_mod.", "module.")
_LAYER_INDEX = re.compile(r"^layers\.(\d+)\.")
# Original per-layer key -> MTLM per-layer key, for the tensors copied unchanged.
_LAYER_RENAMES = {
    "norm1.weight": "input_layernorm.weight",
    "attn.o_proj.weight": "self_attn.o_proj.weight",
    "norm2.weight": "post_attention_layernorm.weight",
    "mlp.w1.weight": "mlp.gate_proj.weight",
    "mlp.w2.weight": "mlp.up_proj.weight",
    "mlp.w3.weight": "mlp.down_proj.weight",
}


def _read_state_dict(path_or_state_dict: str | os.PathLike | Mapping[str, Any]) -> dict[str, Any]:
    """Load the checkpoint, unwrap `{"model": ...}` and strip wrapper prefixes from every key."""
    checkpoint = path_or_state_dict
    if isinstance(checkpoint, (str, os.PathLike)):
        checkpoint = torch.load(checkpoint, map_location="cpu", weights_only=True)
    if not isinstance(checkpoint, Mapping):
        raise TypeError(
            "An original M1 checkpoint is a state dict or a {'model': state_dict, 'optimizer': ..., 'step': ...} "
            f"dict; got {type(checkpoint).__name__}."
        )
    if isinstance(checkpoint.get("model"), Mapping):
        checkpoint = checkpoint["model"]
    state_dict = {}
    for key, value in checkpoint.items():
        name = str(key)
        while name.startswith(_WRAPPER_PREFIXES):
            name = name.split(".", 1)[1]
        state_dict[name] = value
    return state_dict


def _matrix_size(state_dict: Mapping[str, Any], key: str) -> tuple[int, int]:
    """The shape of a 2-D tensor the model's sizes are read from."""
    value = state_dict.get(key)
    if not isinstance(value, torch.Tensor) or value.dim() != 2:
        found = "absent" if value is None else f"a {type(value).__name__} of shape {getattr(value, 'shape', '?')}"
        raise ValueError(f"Cannot read the model's sizes: `{key}` must be a 2-D tensor, but it is {found}.")
    return tuple(value.shape)


def _expected_shapes(
    vocab_size: int, hidden_size: int, intermediate_size: int, num_layers: int
) -> dict[str, tuple[int, ...]]:
    """Every key of an original M1 state dict (`lm_head.weight` aside) and its shape."""
    shapes = {"tok_emb.weight": (vocab_size, hidden_size), "norm_f.weight": (hidden_size,)}
    for i in range(num_layers):
        shapes |= {
            f"layers.{i}.norm1.weight": (hidden_size,),
            f"layers.{i}.attn.qkv.weight": (3 * hidden_size, hidden_size),
            f"layers.{i}.attn.o_proj.weight": (hidden_size, hidden_size),
            f"layers.{i}.norm2.weight": (hidden_size,),
            f"layers.{i}.mlp.w1.weight": (intermediate_size, hidden_size),
            f"layers.{i}.mlp.w2.weight": (intermediate_size, hidden_size),
            f"layers.{i}.mlp.w3.weight": (hidden_size, intermediate_size),
        }
    return shapes


def _check_keys(state_dict: Mapping[str, Any], expected: Mapping[str, tuple[int, ...]]) -> None:
    """Raise one ValueError that lists every missing, unexpected and mis-shaped key."""
    missing = [f"{key} (expected shape {list(shape)})" for key, shape in expected.items() if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    misshaped = []
    for key, shape in expected.items():
        value = state_dict.get(key)
        if value is not None and (not isinstance(value, torch.Tensor) or tuple(value.shape) != shape):
            found = list(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            misshaped.append(f"{key} (shape {found}, expected {list(shape)})")
    raise_for_mismatch(
        "Not a complete original M1 checkpoint (shapes read from `tok_emb.weight` and `layers.0.mlp.w1.weight`). ",
        missing,
        unexpected,
        misshaped,
    )


def _interleaved_to_half_split(weight: torch.Tensor, num_heads: int) -> torch.Tensor:
    """Reorder each head's output rows from pairs (2j, 2j+1) to (j, j + head_dim/2)."""
    rows, columns = weight.shape
    return weight.view(num_heads, rows // num_heads // 2, 2, columns).transpose(1, 2).reshape(rows, columns)


def import_original_m1(
    path_or_state_dict: str | os.PathLike | Mapping[str, Any], num_attention_heads: int = 12, **config_overrides: Any
) -> MTLMForCausalLM:
    """Turn an original M1 checkpoint into an `MTLMForCausalLM` whose logits equal the original model's.

    The file is read with `torch.load(weights_only=True)`: the original trainer saved only tensors and numbers, so
    no pickled code runs. Vocabulary, hidden and intermediate sizes and the layer count are read from the tensors;
    the head count is not recoverable from them. Everything else comes from the `"m1-base"` preset (RoPE base
    10000, RMSNorm eps 1e-6, 1024 positions, no dropout). The original trained with embedding and attention
    dropout 0.05: pass `embedding_dropout=0.05, attention_dropout=0.05` to continue training exactly as it did.

    Args:
        path_or_state_dict (`str`, `os.PathLike` or `Mapping`):
            a `global_step_N.pt` file, or an already loaded state dict; either may be a plain state dict or the
            trainer's `{"model": ..., "optimizer": ..., "step": ...}`. Key prefixes `_orig_mod.` (`torch.compile`)
            and `module.` (DDP) are stripped.
        num_attention_heads (`int`, *optional*, defaults to 12):
            the original's head count (12 for every published M1 size).
        **config_overrides:
            any other `MTLMConfig` field. Sizes that contradict the tensors are refused.

    Returns:
        `MTLMForCausalLM` in eval mode, in the checkpoint's dtype, with `lm_head` tied to the embedding.

    Raises:
        TypeError: if the checkpoint is not a dict.
        ValueError: naming every missing, unexpected or mis-shaped key with the shape expected; or if
            `num_attention_heads` does not split the hidden size into heads of even size, or an override
            contradicts a size read from the tensors, or `lm_head.weight` differs from `tok_emb.weight`.
    """
    state_dict = _read_state_dict(path_or_state_dict)
    vocab_size, hidden_size = _matrix_size(state_dict, "tok_emb.weight")
    intermediate_size, _ = _matrix_size(state_dict, "layers.0.mlp.w1.weight")
    num_layers = 1 + max(int(match[1]) for key in state_dict if (match := _LAYER_INDEX.match(key)))
    if hidden_size % num_attention_heads or (hidden_size // num_attention_heads) % 2:
        raise ValueError(
            f"num_attention_heads={num_attention_heads} must split hidden size {hidden_size} into heads of even "
            "size (RoPE rotates pairs); give the original model's head count."
        )
    embedding = state_dict["tok_emb.weight"]
    lm_head = state_dict.pop("lm_head.weight", embedding)
    _check_keys(state_dict, _expected_shapes(vocab_size, hidden_size, intermediate_size, num_layers))
    if not (isinstance(lm_head, torch.Tensor) and torch.equal(lm_head, embedding)):
        raise ValueError("`lm_head.weight` differs from `tok_emb.weight`, but the original M1 ties them.")

    sizes = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": num_attention_heads,
        "num_key_value_heads": num_attention_heads,
        "head_dim": hidden_size // num_attention_heads,
        "tie_word_embeddings": True,
    }
    config = config_from_sizes("m1-base", sizes, config_overrides, "checkpoint")

    converted = {
        "model.embed_tokens.weight": embedding,
        "model.norm.weight": state_dict["norm_f.weight"],
        "lm_head.weight": embedding,
    }
    for i in range(num_layers):
        source, target = f"layers.{i}.", f"model.layers.{i}."
        q, k, v = state_dict[f"{source}attn.qkv.weight"].chunk(3, dim=0)
        converted[f"{target}self_attn.q_proj.weight"] = _interleaved_to_half_split(q, num_attention_heads)
        converted[f"{target}self_attn.k_proj.weight"] = _interleaved_to_half_split(k, num_attention_heads)
        converted[f"{target}self_attn.v_proj.weight"] = v
        for old, new in _LAYER_RENAMES.items():
            converted[target + new] = state_dict[source + old]

    model = model_from_state_dict(MTLMForCausalLM, config, converted)
    return model.to(embedding.dtype).eval()


__all__ = ["import_original_m1"]
