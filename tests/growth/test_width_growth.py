"""Width growth (`GrowthSpec(width=...)`): exact in memory and on disk, whole, composable with depth."""

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM
from zoo import LLAMA_LIKE, assert_same_tensors, assert_unchanged, build, input_ids, logits, read_tensors, snapshot

from growth_ops import GrowthSpec, grow, grow_checkpoint

MOE = dict(LLAMA_LIKE, num_key_value_heads=2, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=16)


def build_config(model_type, **settings):
    """A tiny random model of a config outside the zoo."""
    torch.manual_seed(0)
    config = AutoConfig.for_model(model_type, **settings)
    return AutoModelForCausalLM.from_config(config, attn_implementation="eager").eval()


# Each with what width growth must get right: GQA and MQA, tied and untied heads, QK-norm, partial rotary,
# LayerNorm, biases, Conv1D, parallel blocks, scaled embeddings, MoE routers and experts, fused qkv and gate_up.
MODELS = {
    "llama (GQA, untied)": lambda: build("llama"),
    "llama (MQA, tied)": lambda: build("llama", num_key_value_heads=1, tie_word_embeddings=True),
    "qwen3 (QK-norm)": lambda: build("qwen3"),
    "gpt_neox (partial rotary, LayerNorm, parallel)": lambda: build("gpt_neox", rotary_pct=0.5),
    "phi (partial rotary, parallel, head bias)": lambda: build_config(
        "phi", **LLAMA_LIKE, partial_rotary_factor=0.5, qk_layernorm=True
    ),
    "phi3 (fused qkv and gate_up)": lambda: build("phi3"),
    "gemma (scaled embeddings, tied, 1 + w norms)": lambda: build("gemma"),
    "gemma3_text (scaled, sliding)": lambda: build("gemma3_text"),
    "gpt2 (Conv1D, biases, tied)": lambda: build("gpt2"),
    "falcon (multi-query, fused)": lambda: build("falcon"),
    "mixtral (router, fused experts)": lambda: build("mixtral"),
    "qwen2_moe (shared expert)": lambda: build_config("qwen2_moe", **MOE, shared_expert_intermediate_size=24),
    "mtlm-m1": lambda: build("mtlm-m1"),
    "mtlm-m2": lambda: build("mtlm-m2"),
}
SIZE_KEYS = ("hidden_size", "num_attention_heads", "num_key_value_heads", "head_dim")
INTERMEDIATE_KEYS = ("intermediate_size", "moe_intermediate_size", "shared_expert_intermediate_size")


def sizes(config):
    return {key: getattr(config, key, None) for key in SIZE_KEYS + INTERMEDIATE_KEYS}


@pytest.mark.parametrize("spec", [GrowthSpec(width=2), GrowthSpec(width=2, intermediate=3)], ids=str)
@pytest.mark.parametrize("name", list(MODELS))
def test_width_growth_keeps_the_logits_and_writes_the_config_a_user_would(name, spec):
    model = MODELS[name]()
    ids = input_ids()
    before, old = logits(model, ids), sizes(model.config)
    grow(model, spec)
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)
    new = sizes(model.config)
    m = spec.intermediate_factor
    assert new["hidden_size"] == 2 * old["hidden_size"]
    assert new["num_attention_heads"] == 2 * old["num_attention_heads"]
    assert new["head_dim"] == old["head_dim"]
    if old["num_key_value_heads"] is not None:
        assert new["num_key_value_heads"] == 2 * old["num_key_value_heads"]
    for key in INTERMEDIATE_KEYS:
        if old[key] is not None:
            assert new[key] == m * old[key], key


def test_grown_model_is_what_its_config_builds_and_saves_and_loads_exactly(tmp_path):
    model = build("mixtral")
    grow(model, GrowthSpec(width=2, intermediate=3))
    fresh = AutoModelForCausalLM.from_config(model.config)
    assert {k: v.shape for k, v in model.state_dict().items()} == {k: v.shape for k, v in fresh.state_dict().items()}
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    ids = input_ids()
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=0, rtol=0)


@pytest.mark.parametrize("arch", ["llama", "gemma3_text", "gpt2", "mtlm-m1"])
def test_width_and_depth_compose_into_a_whole_model(arch, tmp_path):
    model = build(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow(model, GrowthSpec(width=2, depth=2, depth_method="identity"))
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 64
    layers = model.get_decoder().layers if arch != "gpt2" else model.transformer.h
    for j, layer in enumerate(layers):
        assert {m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)} == {j}
    # No storage shared by accident: only the tied head shares the embedding's.
    pointers = {}
    for name, tensor in model.state_dict().items():
        pointers.setdefault(tensor.data_ptr(), []).append(name)
    assert all(len(names) == 1 or any("lm_head" in n for n in names) for names in pointers.values())
    kwargs = dict(max_new_tokens=4, do_sample=False, pad_token_id=0, attention_mask=torch.ones_like(ids))
    assert torch.equal(model.generate(ids, use_cache=True, **kwargs), model.generate(ids, use_cache=False, **kwargs))
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager", trust_remote_code=True)
    torch.testing.assert_close(logits(loaded.eval(), ids), logits(model, ids), atol=0, rtol=0)


def copy_gradients(model, spec):
    """Gradients of the embedding's two column copies and of the two row copies of the first q_proj."""
    grow(model, spec)
    model.train()
    loss = model(input_ids(), labels=input_ids()).loss
    loss.backward()
    embedding = model.get_input_embeddings().weight.grad
    q_proj = model.model.layers[0].self_attn.q_proj.weight.grad
    return embedding.chunk(2, dim=1), q_proj.chunk(2, dim=0)


def test_width_noise_keeps_the_logits_and_makes_the_copies_gradients_differ():
    ids = input_ids()
    reference = logits(build("llama"), ids)
    plain, noisy = build("llama"), build("llama")
    (embedding, q_proj) = copy_gradients(plain, GrowthSpec(width=2))
    torch.testing.assert_close(embedding[0], embedding[1], atol=1e-7, rtol=0)
    torch.testing.assert_close(q_proj[0], q_proj[1], atol=1e-7, rtol=0)
    (embedding, q_proj) = copy_gradients(noisy, GrowthSpec(width=2, width_noise=1e-2, seed=0))
    assert float((embedding[0] - embedding[1]).abs().max()) > 1e-4 * float(embedding[0].abs().max())
    assert float((q_proj[0] - q_proj[1]).abs().max()) > 1e-4 * float(q_proj[0].abs().max())
    for model in (plain, noisy):
        torch.testing.assert_close(logits(model.eval(), ids), reference, atol=1e-5, rtol=0)
    # Seeded: the same spec gives the same weights.
    again = grow(build("llama"), GrowthSpec(width=2, width_noise=1e-2, seed=0))
    assert_same_tensors(noisy.state_dict(), again.state_dict())


@pytest.mark.parametrize(
    "case, match",
    [
        ("bloom", "ALiBi gives every head a slope"),
        ("gpt2-intermediate", r"config.n_inner is None.*set config.n_inner to its value first"),
        ("codegen", r"layer 0 \(CodeGenBlock\) no longer gives the tiled output"),
        ("gpt2-identity-after-layer-0", "depends on its position"),
    ],
)
def test_failed_width_growth_leaves_the_model_unchanged(case, match):
    spec = GrowthSpec(width=2)
    if case == "gpt2-intermediate":
        # n_inner=None: the MLP is 4 x hidden_size, so it cannot grow by another factor than the hidden size.
        model, spec = build("gpt2", n_inner=None), GrowthSpec(width=2, intermediate=3)
    elif case == "codegen":
        model = build("codegen")  # its fused qkv is laid out per model-parallel shard: caught by the numerical check
    elif case == "gpt2-identity-after-layer-0":
        # Width succeeds, then depth refuses: the width growth is undone.
        model = build("gpt2", scale_attn_by_inverse_layer_idx=True)
        spec = GrowthSpec(width=2, depth_method="identity", positions=(0,))
    else:
        model = build(case)
    before = snapshot(model)
    with pytest.raises(ValueError, match=match):
        grow(model, spec)
    assert_unchanged(model, before)


def grow_both_ways(arch, spec, tmp_path):
    model = build(arch)
    model.save_pretrained(tmp_path / "src", max_shard_size="20KB")
    grow(model, spec)
    model.save_pretrained(tmp_path / "memory")
    growth = grow_checkpoint(tmp_path / "src", tmp_path / "disk", spec, max_shard_size="30KB", trust_remote_code=True)
    return model, growth


ON_DISK = {
    "llama": "llama",
    "mixtral (experts stored per expert)": "mixtral",
    "gemma3_text (tied, scaled)": "gemma3_text",
    "mtlm-m2": "mtlm-m2",
    "qwen3_moe": pytest.param("qwen3_moe-sparse-step", marks=pytest.mark.slow),
    "gpt2": pytest.param("gpt2", marks=pytest.mark.slow),
    "gpt_neox (embed_out)": pytest.param("gpt_neox", marks=pytest.mark.slow),
    "mtlm-m1": pytest.param("mtlm-m1", marks=pytest.mark.slow),
}


@pytest.mark.parametrize("arch", list(ON_DISK.values()), ids=list(ON_DISK))
def test_disk_width_growth_equals_in_memory_growth_tensor_for_tensor(arch, tmp_path):
    spec = GrowthSpec(width=2, intermediate=3, depth=2, width_noise=1e-3, seed=1)
    model, growth = grow_both_ways(arch, spec, tmp_path)
    assert growth.width is not None and "width: hidden and heads x2, intermediate x3" in str(growth)
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "disk"))
    grown = AutoConfig.from_pretrained(tmp_path / "disk", trust_remote_code=True).to_dict()
    assert grown == {**model.config.to_dict(), "_name_or_path": str(tmp_path / "disk")}
    loaded = AutoModelForCausalLM.from_pretrained(
        tmp_path / "disk", attn_implementation="eager", trust_remote_code=True
    )
    ids = input_ids()
    torch.testing.assert_close(logits(loaded.eval(), ids), logits(model, ids), atol=0, rtol=0)


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["mtlm-m1", "mtlm-m2"])
def test_widened_mtlm_loads_with_remote_code_where_mtlm_hf_is_absent(arch, tmp_path, run_without_mtlm):
    model = build(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow(model, GrowthSpec(width=2))
    model.save_pretrained(tmp_path / "grown")
    code = f"""
    import json, torch
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "grown")!r}, trust_remote_code=True,
                                                 attn_implementation="eager").eval()
    with torch.no_grad():
        out = model(torch.tensor({ids.tolist()})).logits
    print(json.dumps({{"logits": out.tolist(), "hidden": model.config.hidden_size,
                      "module": type(model).__module__}}))
    """
    result = run_without_mtlm(code)
    assert result["hidden"] == 64 and "mtlm_hf" not in result["module"]
    torch.testing.assert_close(torch.tensor(result["logits"]), before, atol=1e-5, rtol=0)


def test_disk_width_growth_that_cannot_be_exact_writes_nothing(tmp_path):
    build("bloom").save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match="ALiBi gives every head a slope"):
        grow_checkpoint(tmp_path / "src", tmp_path / "dst", GrowthSpec(width=2))
    assert not (tmp_path / "dst").exists()


def test_half_precision_model_widens_within_its_precision():
    model = build("qwen3", dtype=torch.bfloat16)
    ids = input_ids()
    before = logits(model, ids)
    grow(model, GrowthSpec(width=2, width_noise=1e-3))
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    torch.testing.assert_close(logits(model, ids), before, atol=2e-2, rtol=2e-2)
