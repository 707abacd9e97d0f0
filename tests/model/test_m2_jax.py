"""The Flax MTLM (mtlm_recipes.m2_jax) against PyTorch MTLM, the weight bridge both ways, the export folder, the import
of the original TinyGPT tree (checked against a linen re-implementation of it), and the trainer's data and loss."""

import gzip
import json
from pathlib import Path

import numpy as np
import pytest
import torch

jax = pytest.importorskip("jax", reason="JAX is not installed; the M2 JAX path needs `pip install '.[jax]'`")
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import orbax.checkpoint as ocp  # noqa: E402
from flax import linen, nnx  # noqa: E402
from safetensors.numpy import save_file  # noqa: E402

import mtlm_hf  # noqa: E402
from growth_ops import grow_depth  # noqa: E402
from mtlm_hf.flax_bridge import (  # noqa: E402
    flax_params_to_state_dict,
    import_original_m2,
    mtlm_from_flax_params,
    mtlm_to_flax_params,
    save_flax_as_mtlm,
)
from mtlm_recipes.m2_jax.config import OptimizerConfig  # noqa: E402
from mtlm_recipes.m2_jax.corpus import batch_indices, pack_blocks, split_units  # noqa: E402
from mtlm_recipes.m2_jax.modeling_flax import FlaxMTLMForCausalLM  # noqa: E402
from mtlm_recipes.m2_jax.steps import make_optimizer, make_schedule, next_token_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]

STYLES = {
    "m2": ("m2-tiny", {}),
    "m1": ("m1-tiny", {}),  # RoPE, SwiGLU, tied, 4 query heads on 2 key/value heads
    "m1-sliding": ("m1-tiny", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 3}),
}


def torch_model(preset: str, seed: int = 0, **overrides) -> mtlm_hf.MTLMForCausalLM:
    """A random MTLM whose norms and biases are perturbed too, so that every weight matters to the logits."""
    torch.manual_seed(seed)
    model = mtlm_hf.MTLMForCausalLM(mtlm_hf.MTLMConfig.from_preset(preset, **overrides)).eval()
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.dim() == 1:
                parameter.add_(0.1 * torch.randn_like(parameter))
    return model


def flax_model_with(params: dict, config: mtlm_hf.MTLMConfig) -> FlaxMTLMForCausalLM:
    model = FlaxMTLMForCausalLM(config, rngs=nnx.Rngs(1))
    state = nnx.state(model, nnx.Param)
    nnx.replace_by_pure_dict(state, params)
    nnx.update(model, state)
    return model


def flax_logits(model: FlaxMTLMForCausalLM, ids: np.ndarray) -> np.ndarray:
    return np.asarray(nnx.jit(lambda model, ids: model(ids))(model, jnp.asarray(ids)))  # one compile, not one per op


def token_ids(vocab_size: int, shape=(3, 11), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, vocab_size, shape)


@pytest.mark.parametrize("style", STYLES)
def test_same_weights_give_same_logits_in_jax_and_pytorch(style):
    preset, overrides = STYLES[style]
    model = torch_model(preset, **overrides)
    flax_model = flax_model_with(mtlm_to_flax_params(model), model.config)
    ids = token_ids(model.config.vocab_size)
    with torch.no_grad():
        expected = model(torch.tensor(ids)).logits.numpy()
    logits = flax_logits(flax_model, ids)
    assert logits.shape == expected.shape
    assert np.abs(logits - expected).max() <= 1e-4
    if style == "m1-sliding":  # the window must matter, or this case would test nothing beyond "m1"
        full = flax_model_with(mtlm_to_flax_params(torch_model(preset)), torch_model(preset).config)
        assert np.abs(flax_logits(full, ids) - logits).max() > 1e-3


def test_dropout_acts_only_in_training_and_follows_the_key():
    model = torch_model("m1-tiny", attention_dropout=0.3, hidden_dropout=0.2, embedding_dropout=0.1)
    flax_model = flax_model_with(mtlm_to_flax_params(model), model.config)
    ids = jnp.asarray(token_ids(model.config.vocab_size))
    with torch.no_grad():
        expected = model(torch.tensor(np.asarray(ids))).logits.numpy()  # eval mode: no dropout

    @nnx.jit
    def train_mode(model: FlaxMTLMForCausalLM, key: jax.Array) -> jax.Array:
        return model(ids, deterministic=False, rngs=nnx.Rngs(dropout=key))

    def train_logits(seed: int) -> np.ndarray:
        return np.asarray(train_mode(flax_model, jax.random.key(seed)))

    assert np.abs(flax_logits(flax_model, ids) - expected).max() <= 1e-4
    assert np.array_equal(train_logits(0), train_logits(0))
    assert np.abs(train_logits(0) - train_logits(1)).max() > 1e-2
    assert np.abs(train_logits(0) - expected).max() > 1e-2
    with pytest.raises(ValueError, match="needs `rngs` with a 'dropout' stream"):
        flax_model(ids, deterministic=False)


def test_bfloat16_compute_keeps_float32_parameters():
    config = mtlm_hf.MTLMConfig.from_preset("m2-tiny")
    full = FlaxMTLMForCausalLM(config, rngs=nnx.Rngs(0))
    mixed = FlaxMTLMForCausalLM(config, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(nnx.state(mixed, nnx.Param))} == {jnp.dtype("float32")}
    ids = token_ids(config.vocab_size)
    logits, reference = flax_logits(mixed, ids), flax_logits(full, ids)
    assert logits.dtype == np.float32
    assert 0 < np.abs(logits - reference).max() < 0.05


def test_the_bridge_does_not_import_jax(run_without_mtlm):
    result = run_without_mtlm(
        """
        import json, sys
        sys.meta_path.pop(0)  # let mtlm_hf be imported here (the editable install finds it from any folder)
        import mtlm_hf, mtlm_hf.flax_bridge
        print(json.dumps({"jax": "jax" in sys.modules, "flax": "flax" in sys.modules}))
        """
    )
    assert result == {"jax": False, "flax": False}


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("preset", ["m2-tiny", "m1-tiny"])
def test_grown_model_round_trips_through_flax_bit_for_bit(preset, dtype):
    model = grow_depth(torch_model(preset), factor=2).to(dtype)
    params = mtlm_to_flax_params(model)
    assert len(params["model"]["layers"]) == 4
    assert ("lm_head" in params) == (not model.config.tie_word_embeddings)
    kernel = params["model"]["layers"][3]["self_attn"]["q_proj"]["kernel"]
    assert kernel.shape == (model.config.hidden_size, model.config.num_attention_heads * model.config.head_dim)

    # Through real jax arrays, as a Flax model holds them.
    state_dict = flax_params_to_state_dict(jax.tree.map(jnp.asarray, params), model.config)
    original = model.state_dict()
    assert state_dict.keys() == original.keys()
    for key, tensor in original.items():
        assert state_dict[key].dtype == dtype
        assert torch.equal(state_dict[key], tensor), key
    rebuilt = mtlm_from_flax_params(params, model.config)
    assert rebuilt.dtype == dtype
    assert all(torch.equal(rebuilt.state_dict()[k], v) for k, v in original.items())


def test_flax_params_that_do_not_fit_the_config_are_refused_with_their_names():
    model = torch_model("m2-tiny")
    params = mtlm_to_flax_params(model)
    del params["model"]["layers"][1]["mlp"]["up_proj"]["bias"]
    params["model"]["norm"]["scale"] = np.ones(7, np.float32)
    params["model"]["extra"] = {"kernel": np.ones((2, 2), np.float32)}
    with pytest.raises(ValueError) as error:
        flax_params_to_state_dict(params, model.config)
    message = str(error.value)
    assert "missing: model/layers/1/mlp/up_proj/bias (expected shape [64])" in message
    assert "unexpected: model/extra/kernel" in message
    assert "mis-shaped: model/norm/scale (shape [7], expected [32])" in message


def test_export_writes_a_folder_that_loads_with_remote_code_and_gives_the_flax_logits(tmp_path, run_without_mtlm):
    ids = token_ids(32000, (2, 9))
    expected = {}
    for style, preset in (("m2", "m2"), ("m1", "m1-base")):
        config = mtlm_hf.MTLMConfig.from_preset(
            preset, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
        flax_model = FlaxMTLMForCausalLM(config, rngs=nnx.Rngs(0))
        folder = save_flax_as_mtlm(nnx.to_pure_dict(nnx.state(flax_model, nnx.Param)), config, tmp_path / style)
        expected[style] = flax_logits(flax_model, ids)
        saved = json.loads((folder / "config.json").read_text())
        assert saved["auto_map"]["AutoModelForCausalLM"] == "modeling_mtlm.MTLMForCausalLM"
        for name in ("model.safetensors", "configuration_mtlm.py", "modeling_mtlm.py", "tokenizer.json"):
            assert (folder / name).is_file(), name

    result = run_without_mtlm(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
        out = {{}}
        for style in ("m2", "m1"):
            folder = {str(tmp_path)!r} + "/" + style
            model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=True)
            with torch.no_grad():
                logits = model(torch.tensor({ids.tolist()})).logits
            out[style] = {{"class": type(model).__name__, "module": type(model).__module__,
                          "logits": logits.tolist(), "ids": tokenizer("Hello world").input_ids}}
        print(json.dumps(out))
        """
    )
    reference_ids = mtlm_hf.mistral_tokenizer()("Hello world").input_ids
    for style, logits in expected.items():
        loaded = result[style]
        assert loaded["class"] == "MTLMForCausalLM" and "mtlm_hf" not in loaded["module"]
        assert np.abs(np.asarray(loaded["logits"]) - logits).max() <= 1e-4
        assert loaded["ids"] == reference_ids


# The original MTLM2 model ("TinyGPT", ORIGINALS.md) in Flax linen, as the oracle for its import: linen's
# automatic names give the original parameter tree, `MultiHeadDotProductAttention` its attention.
class _TinyGPTBlock(linen.Module):
    num_heads: int
    mlp_dim: int

    @linen.compact
    def __call__(self, x, mask):
        x = x + linen.MultiHeadDotProductAttention(num_heads=self.num_heads)(linen.RMSNorm(epsilon=1e-6)(x), mask=mask)
        hidden = linen.Dense(self.mlp_dim)(linen.RMSNorm(epsilon=1e-6)(x))
        return x + linen.Dense(x.shape[-1])(linen.gelu(hidden))


class _TinyGPT(linen.Module):
    vocab_size: int
    hidden_size: int
    num_layers: int
    num_heads: int
    mlp_dim: int
    max_len: int

    @linen.compact
    def __call__(self, ids):
        positions = self.param("pos_emb", linen.initializers.normal(0.02), (self.max_len, self.hidden_size))
        x = linen.Embed(self.vocab_size, self.hidden_size, name="tok_emb")(ids) + positions[: ids.shape[1]]
        mask = linen.make_causal_mask(ids)
        for i in range(self.num_layers):
            x = _TinyGPTBlock(self.num_heads, self.mlp_dim, name=f"block_{i}")(x, mask)
        return linen.Dense(self.vocab_size, use_bias=False, name="head")(linen.RMSNorm(epsilon=1e-6, name="norm_f")(x))


@pytest.fixture(scope="module")
def tinygpt():
    oracle = _TinyGPT(
        vocab_size=99, hidden_size=32, num_layers=2, num_heads=4, mlp_dim=int(32 * 4 * 2 / 3), max_len=64
    )
    ids = token_ids(99, (2, 13))
    params = jax.jit(oracle.init)(jax.random.key(0), jnp.asarray(ids))["params"]
    # Linen starts biases at 0 and norm scales at 1: move every parameter so that each one counts.
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    params = jax.tree.unflatten(
        treedef, [p + 0.05 * jax.random.normal(k, p.shape) for p, k in zip(leaves, keys, strict=True)]
    )
    return params, ids, np.asarray(jax.jit(oracle.apply)({"params": params}, jnp.asarray(ids)))


@pytest.mark.slow  # builds the original TinyGPT in JAX (shared fixture): 30-45 s on 2 shared cores
def test_original_tinygpt_tree_has_the_names_and_shapes_of_originals_md(tinygpt):
    params, _, _ = tinygpt
    attention = params["block_1"]["MultiHeadDotProductAttention_0"]
    assert params["tok_emb"]["embedding"].shape == (99, 32) and params["pos_emb"].shape == (64, 32)
    assert attention["query"]["kernel"].shape == (32, 4, 8) and attention["query"]["bias"].shape == (4, 8)
    assert attention["out"]["kernel"].shape == (4, 8, 32) and attention["out"]["bias"].shape == (32,)
    assert params["block_1"]["Dense_0"]["kernel"].shape == (32, 85)
    assert params["block_1"]["RMSNorm_1"]["scale"].shape == (32,)
    assert params["head"]["kernel"].shape == (32, 99) and params["norm_f"]["scale"].shape == (32,)


@pytest.mark.slow  # builds the original TinyGPT in JAX (shared fixture): 30-45 s on 2 shared cores
@pytest.mark.parametrize("form", ["tree", "train_state_in_orbax", "flat_safetensors"])
def test_original_tinygpt_imports_with_its_logits(tinygpt, form, tmp_path):
    params, ids, expected = tinygpt
    source = jax.tree.map(np.asarray, params)
    if form == "train_state_in_orbax":
        ocp.PyTreeCheckpointer().save(tmp_path / "ckpt", {"step": 500, "params": source})
        source = tmp_path / "ckpt"
    elif form == "flat_safetensors":
        flat = {"/".join(k.key for k in path): leaf for path, leaf in jax.tree_util.tree_leaves_with_path(source)}
        save_file(flat, tmp_path / "model.safetensors")
        source = tmp_path / "model.safetensors"
    model = import_original_m2(source)
    config = model.config
    assert (config.num_hidden_layers, config.num_attention_heads, config.intermediate_size) == (2, 4, 85)
    assert (config.position_embedding_type, config.mlp_type, config.tie_word_embeddings) == ("learned", "plain", False)
    with torch.no_grad():
        logits = model(torch.tensor(ids)).logits.numpy()
    assert np.abs(logits - expected).max() <= 1e-4


@pytest.mark.slow  # builds the original TinyGPT in JAX (shared fixture): 30-45 s on 2 shared cores
def test_incomplete_original_tree_is_refused_with_every_problem_named(tinygpt):
    params = jax.tree.map(np.asarray, tinygpt[0])
    params = {**params, "block_1": {k: v for k, v in params["block_1"].items() if k != "Dense_1"}}
    params["norm_f"] = {"scale": np.ones(5, np.float32)}
    with pytest.raises(ValueError) as error:
        import_original_m2(params)
    message = str(error.value)
    assert "missing: block_1/Dense_1/kernel (expected shape [85, 32]), block_1/Dense_1/bias" in message
    assert "mis-shaped: norm_f/scale (shape [5], expected [32])" in message
    with pytest.raises(ValueError, match=r"num_hidden_layers=3 \(the parameters have 2\)"):
        import_original_m2(jax.tree.map(np.asarray, tinygpt[0]), num_hidden_layers=3)


def test_each_line_ends_with_eos_and_blank_lines_are_dropped():
    tokenizer = mtlm_hf.mistral_tokenizer()
    documents = ["First line\n\nSecond line", "  \nThird"]
    units = split_units(iter(documents), "line")
    assert units == ["First line", "Second line", "Third"]
    assert split_units(iter(documents), "document") == documents
    blocks = pack_blocks(units, tokenizer, seq_len=4)
    stream = [t for text in units for t in (*tokenizer(text, add_special_tokens=False).input_ids, 2)]
    assert blocks.dtype == np.int32 and blocks.shape == (len(stream) // 4, 4)
    assert blocks.ravel().tolist() == stream[: blocks.size]
    assert tokenizer.bos_token_id not in blocks
    with pytest.raises(ValueError, match="eos_per must be one of"):
        split_units(iter(documents), "sentence")


def test_embedded_corpus_packs_with_eos_after_every_line():
    with gzip.open(ROOT / "examples/data/shakespeare/validation.jsonl.gz", "rt") as f:
        text = json.loads(f.readline())["text"][:2000]
    lines = [line for line in text.splitlines() if line.strip()]
    blocks = pack_blocks(split_units(iter([text]), "line"), mtlm_hf.mistral_tokenizer(), seq_len=16)
    # Every line ends with EOS: the stream holds one per line (the tail that fills no block is dropped).
    assert np.sum(blocks == 2) in (len(lines), len(lines) - 1)


def test_loss_leaves_out_eos_targets():
    ids = jnp.asarray([[5, 2, 7, 3], [2, 4, 2, 6]])
    logits = jax.random.normal(jax.random.key(0), (2, 4, 9))
    per_token = optax.softmax_cross_entropy_with_integer_labels(logits[:, :-1], ids[:, 1:])
    counted = np.asarray(ids[:, 1:] != 2)
    expected = float(np.sum(np.asarray(per_token) * counted) / counted.sum())
    assert float(next_token_loss(logits, ids, ignored_id=2)) == pytest.approx(expected, rel=1e-6)
    assert float(next_token_loss(logits, ids, ignored_id=2)) != pytest.approx(float(per_token.mean()), rel=1e-3)


def test_batch_order_is_a_seeded_permutation_per_epoch():
    epoch = np.concatenate([batch_indices(10, 3, seed=0, step=s) for s in range(3)])
    assert len(set(epoch.tolist())) == 9  # three batches of an epoch never repeat a block
    assert not np.array_equal(batch_indices(10, 3, 0, 0), batch_indices(10, 3, 0, 3))  # next epoch, new order
    assert np.array_equal(batch_indices(10, 3, 0, 4), batch_indices(10, 3, 0, 4))
    with pytest.raises(ValueError, match="fewer than one batch"):
        batch_indices(2, 3, 0, 0)


def test_optimizer_follows_the_originals_warmup_cosine_and_decays_every_parameter():
    cfg = OptimizerConfig(total_steps=100, lr=4e-4, warmup_steps=20, min_lr_ratio=0.1)
    schedule = make_schedule(cfg)
    assert float(schedule(0)) == 0.0
    assert float(schedule(10)) == pytest.approx(2e-4)
    assert float(schedule(20)) == pytest.approx(4e-4)
    assert float(schedule(100)) == pytest.approx(4e-5)

    optimizer = make_optimizer(OptimizerConfig(total_steps=10, lr=1e-2, warmup_steps=1, weight_decay=0.5))
    params = {"kernel": jnp.ones((2, 2)), "bias": jnp.ones(2)}
    state = optimizer.init(params)
    zero = jax.tree.map(jnp.zeros_like, params)
    _, state = optimizer.update(zero, state, params)  # step 0 has lr 0
    updates, _ = optimizer.update(zero, state, params)
    # With no gradient, AdamW's update is the decoupled decay alone, on biases too (the original decayed all).
    assert np.allclose(updates["bias"], -1e-2 * 0.5) and np.allclose(updates["kernel"], -1e-2 * 0.5)
