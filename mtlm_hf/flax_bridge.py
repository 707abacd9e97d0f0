# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""Move MTLM weights between PyTorch and Flax, and import the original MTLM2 ("TinyGPT") parameter tree.

A Flax MTLM (`mtlm_recipes/m2_jax/modeling_flax.py`) keeps the PyTorch module names, so a parameter's Flax path is its
PyTorch key split at the dots, with Flax's leaf names: `kernel` for a linear weight, stored transposed as
(in, out); `embedding` for an embedding table; `scale` for an RMSNorm weight; `bias` unchanged. Layer indices are
`int` keys (`nnx.List`). A tied `lm_head` has no Flax entry: the Flax model multiplies by the embedding table.

Everything here works on NumPy arrays, so this module imports neither jax nor flax: it converts jax arrays with
`numpy.asarray` and reads orbax checkpoints through a lazy import. Parameters in bfloat16 pass through
`ml_dtypes` (installed with jax), so a round trip is bit-exact in every dtype.
"""

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from ._state_dict import config_from_sizes, model_from_state_dict, raise_for_mismatch
from .configuration_mtlm import MTLMConfig
from .modeling_mtlm import MTLMForCausalLM
from .tokenization import mistral_tokenizer

# PyTorch modules whose `weight` is a lookup table (Flax `embedding`, not a transposed `kernel`).
_EMBEDDING_MODULES = ("embed_tokens", "embed_positions")
_FLAX_WEIGHT_LEAVES = ("kernel", "embedding", "scale")
_TIED_HEAD_KEY = "lm_head.weight"
_EMBEDDING_KEY = "model.embed_tokens.weight"


def _to_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A NumPy copy of `tensor` with the same bits (NumPy has no bfloat16: `ml_dtypes` supplies it)."""
    tensor = tensor.detach().cpu()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes  # installed with jax; needed only for bfloat16 weights

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16).copy()
    return tensor.numpy().copy()


def _to_torch(array: Any) -> torch.Tensor:
    """A torch tensor with the same bits as `array` (a NumPy or jax array)."""
    array = np.ascontiguousarray(np.asarray(array))
    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(array.copy())


def _flax_path(torch_key: str, ndim: int) -> tuple[str | int, ...]:
    """`model.layers.0.self_attn.q_proj.weight` -> `("model", "layers", 0, "self_attn", "q_proj", "kernel")`."""
    *modules, leaf = (int(part) if part.isdigit() else part for part in torch_key.split("."))
    if leaf == "weight":
        leaf = "embedding" if modules[-1] in _EMBEDDING_MODULES else "scale" if ndim == 1 else "kernel"
    return (*modules, leaf)


def _torch_key(flax_path: tuple) -> str:
    """The inverse of `_flax_path`; a leaf name Flax MTLM does not use is kept, so the key shows as unexpected."""
    *modules, leaf = (str(part) for part in flax_path)
    return ".".join([*modules, "weight" if leaf in _FLAX_WEIGHT_LEAVES else leaf])


def _flatten(tree: Mapping, prefix: tuple = ()) -> dict[tuple, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, Mapping):
            flat |= _flatten(value, (*prefix, key))
        else:
            flat[(*prefix, key)] = value
    return flat


def _unflatten(flat: Mapping[tuple, Any]) -> dict:
    tree: dict = {}
    for path, value in flat.items():
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = value
    return tree


def _expected_state_dict_shapes(config: MTLMConfig) -> dict[str, tuple[int, ...]]:
    """Every key of an `MTLMForCausalLM` state dict with its shape, from a model on the meta device."""
    with torch.device("meta"):
        model = MTLMForCausalLM(config)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def mtlm_to_flax_params(model: MTLMForCausalLM) -> dict:
    """Convert an MTLM PyTorch model's weights to the Flax MTLM's parameter tree (e.g. to continue a grown model).

    Args:
        model (`MTLMForCausalLM`): any MTLM model, e.g. one grown in depth with `growth_ops`.

    Returns:
        `dict`: nested by module, NumPy leaves in the model's dtype; pass it to `nnx.replace_by_pure_dict` on the
        Flax model's `nnx.state`. A tied `lm_head` is left out, as the Flax model has none.

    Raises:
        ValueError: if `model` is not an MTLM model.
    """
    if getattr(model.config, "model_type", None) != "mtlm":
        raise ValueError(
            f"mtlm_to_flax_params expects an MTLMForCausalLM, got model_type {model.config.model_type!r}; "
            "convert Llama models with mtlm_hf.from_llama first."
        )
    flat = {}
    for key, tensor in model.state_dict().items():
        if key == _TIED_HEAD_KEY and model.config.tie_word_embeddings:
            continue
        array = _to_numpy(tensor)
        path = _flax_path(key, array.ndim)
        flat[path] = array.T if path[-1] == "kernel" else array
    return _unflatten(flat)


def flax_params_to_state_dict(params: Mapping, config: MTLMConfig) -> dict[str, torch.Tensor]:
    """Convert a Flax MTLM parameter tree to the `MTLMForCausalLM` state dict, checking every name and shape.

    Args:
        params (`Mapping`): the tree `mtlm_to_flax_params` returns, or `nnx.to_pure_dict(nnx.state(flax_model))`
            (jax or NumPy leaves; layer indices may be `int` or `str`).
        config (`MTLMConfig`): the configuration the parameters belong to.

    Returns:
        `dict[str, torch.Tensor]`: a complete state dict (with `lm_head.weight` sharing the embedding when tied).

    Raises:
        ValueError: listing every missing, unexpected and mis-shaped parameter, with Flax paths and shapes.
    """
    state_dict, flax_names = {}, {}
    for path, array in _flatten(params).items():
        tensor = _to_torch(array)
        key = _torch_key(path)
        state_dict[key] = tensor.T.contiguous() if str(path[-1]) == "kernel" and tensor.dim() == 2 else tensor
        flax_names[key] = "/".join(map(str, path))
    if config.tie_word_embeddings and _EMBEDDING_KEY in state_dict:
        state_dict[_TIED_HEAD_KEY] = state_dict[_EMBEDDING_KEY]
        flax_names[_TIED_HEAD_KEY] = flax_names[_EMBEDDING_KEY]
    expected = _expected_state_dict_shapes(config)

    def flax_shape(key: str, shape: tuple[int, ...]) -> list[int]:
        return list(shape[::-1] if len(shape) == 2 and _flax_path(key, 2)[-1] == "kernel" else shape)

    missing = [
        f"{'/'.join(map(str, _flax_path(key, len(shape))))} (expected shape {flax_shape(key, shape)})"
        for key, shape in expected.items()
        if key not in state_dict
    ]
    unexpected = [flax_names[key] for key in state_dict if key not in expected]
    misshaped = [
        f"{flax_names[key]} (shape {flax_shape(key, tuple(tensor.shape))}, expected {flax_shape(key, expected[key])})"
        for key, tensor in state_dict.items()
        if key in expected and tuple(tensor.shape) != expected[key]
    ]
    raise_for_mismatch(
        "These Flax parameters do not fit the MTLM config "
        f"(hidden {config.hidden_size}, {config.num_hidden_layers} layers, vocab {config.vocab_size}): ",
        missing,
        unexpected,
        misshaped,
        footer=". Pass the config the parameters were trained with.",
    )
    return state_dict


def mtlm_from_flax_params(params: Mapping, config: MTLMConfig) -> MTLMForCausalLM:
    """Build the `MTLMForCausalLM` that computes what the Flax MTLM with `params` computes.

    Args:
        params (`Mapping`): a Flax MTLM parameter tree (see `flax_params_to_state_dict`).
        config (`MTLMConfig`): its configuration.

    Returns:
        `MTLMForCausalLM` in eval mode, in the parameters' dtype.

    Raises:
        ValueError: if the parameters do not fit `config`.
    """
    state_dict = flax_params_to_state_dict(params, config)
    model = model_from_state_dict(MTLMForCausalLM, config, state_dict)
    return model.to(state_dict[_EMBEDDING_KEY].dtype).eval()


def save_flax_as_mtlm(
    params: Mapping,
    config: MTLMConfig,
    save_directory: str | os.PathLike,
    tokenizer: PreTrainedTokenizerBase | None = None,
) -> Path:
    """Write a Flax MTLM as an MTLM checkpoint folder that loads with `trust_remote_code=True` anywhere.

    Args:
        params (`Mapping`): a Flax MTLM parameter tree (see `flax_params_to_state_dict`).
        config (`MTLMConfig`): its configuration.
        save_directory (`str` or `os.PathLike`): the folder to write (created if needed).
        tokenizer (`PreTrainedTokenizerBase`, *optional*):
            saved beside the weights; defaults to `mistral_tokenizer()`, the tokenizer both originals used.

    Returns:
        `Path`: the folder, holding `model.safetensors`, `config.json` with `auto_map`, `configuration_mtlm.py`,
        `modeling_mtlm.py`, `generation_config.json` and the tokenizer files.

    Raises:
        ValueError: if the parameters do not fit `config`.
    """
    save_directory = Path(save_directory)
    mtlm_from_flax_params(params, config).save_pretrained(save_directory)
    (tokenizer or mistral_tokenizer()).save_pretrained(save_directory)
    return save_directory


# The original MTLM2 ("TinyGPT", JAX/Flax linen): per-block module -> MTLM module, for the Dense layers.
_ORIGINAL_DENSE = {"Dense_0": "mlp.up_proj", "Dense_1": "mlp.down_proj"}
_ORIGINAL_ATTENTION = "MultiHeadDotProductAttention_0"
_ORIGINAL_PROJECTIONS = {"query": "q_proj", "key": "k_proj", "value": "v_proj"}


def _read_original_tree(source: str | os.PathLike | Mapping) -> dict[tuple[str, ...], Any]:
    """Flatten an original parameter tree given as a mapping, an orbax checkpoint folder or a safetensors file."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            import orbax.checkpoint as ocp  # only orbax folders need it

            source = ocp.PyTreeCheckpointer().restore(path.resolve())
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            source = load_file(path)
        else:
            raise ValueError(
                f"{path} is neither an orbax checkpoint folder nor a .safetensors file; pass one of those, or the "
                "parameter tree itself."
            )
    if not isinstance(source, Mapping):
        raise TypeError(f"An original MTLM2 parameter tree is a mapping; got {type(source).__name__}.")
    # Train states and linen variable dicts wrap the tree: {"params": {...}, "opt_state": ..., "step": ...}.
    while "tok_emb" not in source and isinstance(source.get("params"), Mapping):
        source = source["params"]
    flat = {}
    for path, value in _flatten(source).items():
        # Flat files join the path with "/" or "." (no original name contains either).
        parts = tuple(part for key in path for part in str(key).replace(".", "/").split("/"))
        flat[parts] = value
    return flat


def _original_shapes(vocab: int, hidden: int, positions: int, heads: int, head_dim: int, mlp: int, layers: int):
    """Every path of the original TinyGPT parameter tree, with its shape."""
    shapes = {
        ("tok_emb", "embedding"): (vocab, hidden),
        ("pos_emb",): (positions, hidden),
        ("norm_f", "scale"): (hidden,),
        ("head", "kernel"): (hidden, vocab),
    }
    for i in range(layers):
        block = f"block_{i}"
        shapes |= {(block, "RMSNorm_0", "scale"): (hidden,), (block, "RMSNorm_1", "scale"): (hidden,)}
        for name in _ORIGINAL_PROJECTIONS:
            shapes[(block, _ORIGINAL_ATTENTION, name, "kernel")] = (hidden, heads, head_dim)
            shapes[(block, _ORIGINAL_ATTENTION, name, "bias")] = (heads, head_dim)
        shapes[(block, _ORIGINAL_ATTENTION, "out", "kernel")] = (heads, head_dim, hidden)
        shapes[(block, _ORIGINAL_ATTENTION, "out", "bias")] = (hidden,)
        shapes |= {(block, "Dense_0", "kernel"): (hidden, mlp), (block, "Dense_0", "bias"): (mlp,)}
        shapes |= {(block, "Dense_1", "kernel"): (mlp, hidden), (block, "Dense_1", "bias"): (hidden,)}
    return shapes


def _shape_of(flat: Mapping[tuple, Any], path: tuple[str, ...], ndim: int) -> tuple[int, ...]:
    value = flat.get(path)
    if value is None or np.ndim(value) != ndim:
        found = "absent" if value is None else f"of shape {list(np.shape(value))}"
        raise ValueError(
            f"Cannot read the model's sizes: `{'/'.join(path)}` must be a {ndim}-D array, but it is {found}. "
            "Is this an original MTLM2 (TinyGPT) parameter tree?"
        )
    return tuple(np.shape(value))


def import_original_m2(source: str | os.PathLike | Mapping, **config_overrides: Any) -> MTLMForCausalLM:
    """Turn the original MTLM2 ("TinyGPT", Flax linen) parameter tree into an `MTLMForCausalLM` with its logits.

    The sizes (vocabulary, hidden, heads, head size, MLP, positions, layers) are read from the arrays; the rest
    comes from the `"m2"` preset: learned positions, GELU (tanh) MLP, biases, untied head, RMSNorm eps 1e-6. The
    original trained with residual dropout 0.1: pass `hidden_dropout=0.1` to continue training as it did.

    Args:
        source (`str`, `os.PathLike` or `Mapping`):
            the parameter tree (`tok_emb/embedding`, `pos_emb`, `block_{i}/...`, `norm_f/scale`, `head/kernel`),
            nested or flat with `/`- or `.`-joined keys, optionally wrapped in `{"params": ...}` (a linen variable
            dict or a train state); or an orbax checkpoint folder or a `.safetensors` file holding it.
        **config_overrides: any other `MTLMConfig` field. Sizes that contradict the arrays are refused.

    Returns:
        `MTLMForCausalLM` in eval mode, in the parameters' dtype.

    Raises:
        TypeError: if `source` is not a mapping, folder or file.
        ValueError: naming every missing, unexpected or mis-shaped parameter with the shape expected, or an
            override that contradicts the arrays.
    """
    flat = _read_original_tree(source)
    vocab_size, hidden_size = _shape_of(flat, ("tok_emb", "embedding"), 2)
    positions, _ = _shape_of(flat, ("pos_emb",), 2)
    _, heads, head_dim = _shape_of(flat, ("block_0", _ORIGINAL_ATTENTION, "query", "kernel"), 3)
    _, intermediate_size = _shape_of(flat, ("block_0", "Dense_0", "kernel"), 2)
    num_layers = 1 + max(int(path[0][len("block_") :]) for path in flat if path[0].startswith("block_"))
    expected = _original_shapes(vocab_size, hidden_size, positions, heads, head_dim, intermediate_size, num_layers)
    missing = [f"{'/'.join(p)} (expected shape {list(s)})" for p, s in expected.items() if p not in flat]
    unexpected = ["/".join(p) for p in flat if p not in expected]
    misshaped = [
        f"{'/'.join(p)} (shape {list(np.shape(flat[p]))}, expected {list(s)})"
        for p, s in expected.items()
        if p in flat and tuple(np.shape(flat[p])) != s
    ]
    raise_for_mismatch(
        "Not a complete original MTLM2 parameter tree (sizes read from `tok_emb/embedding`, `pos_emb`, "
        "`block_0/MultiHeadDotProductAttention_0/query/kernel` and `block_0/Dense_0/kernel`). ",
        missing,
        unexpected,
        misshaped,
    )

    sizes = {
        "vocab_size": vocab_size,
        "hidden_size": hidden_size,
        "intermediate_size": intermediate_size,
        "num_hidden_layers": num_layers,
        "num_attention_heads": heads,
        "num_key_value_heads": heads,
        "head_dim": head_dim,
        "max_position_embeddings": positions,
        "tie_word_embeddings": False,
    }
    config = config_from_sizes("m2", sizes, config_overrides, "parameters", has="have")

    def take(*path: str) -> np.ndarray:
        return np.asarray(flat[path])

    params = {
        ("model", "embed_tokens", "embedding"): take("tok_emb", "embedding"),
        ("model", "embed_positions", "embedding"): take("pos_emb"),
        ("model", "norm", "scale"): take("norm_f", "scale"),
        ("lm_head", "kernel"): take("head", "kernel"),
    }
    projected = heads * head_dim
    for i in range(num_layers):
        block, layer = f"block_{i}", ("model", "layers", i)
        params[(*layer, "input_layernorm", "scale")] = take(block, "RMSNorm_0", "scale")
        params[(*layer, "post_attention_layernorm", "scale")] = take(block, "RMSNorm_1", "scale")
        # (hidden, heads, head_dim) -> (hidden, heads * head_dim): heads outermost, as MTLM splits its projections.
        for name, target in _ORIGINAL_PROJECTIONS.items():
            params[(*layer, "self_attn", target, "kernel")] = take(block, _ORIGINAL_ATTENTION, name, "kernel").reshape(
                hidden_size, projected
            )
            params[(*layer, "self_attn", target, "bias")] = take(block, _ORIGINAL_ATTENTION, name, "bias").reshape(
                projected
            )
        out_kernel = take(block, _ORIGINAL_ATTENTION, "out", "kernel").reshape(projected, hidden_size)
        params[(*layer, "self_attn", "o_proj", "kernel")] = out_kernel
        params[(*layer, "self_attn", "o_proj", "bias")] = take(block, _ORIGINAL_ATTENTION, "out", "bias")
        for name, target in _ORIGINAL_DENSE.items():
            params[(*layer, *target.split("."), "kernel")] = take(block, name, "kernel")
            params[(*layer, *target.split("."), "bias")] = take(block, name, "bias")
    return mtlm_from_flax_params(_unflatten(params), config)


__all__ = [
    "flax_params_to_state_dict",
    "import_original_m2",
    "mtlm_from_flax_params",
    "mtlm_to_flax_params",
    "save_flax_as_mtlm",
]
