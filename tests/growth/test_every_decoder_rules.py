"""The per-layer rules that the decoders of the mapping taught growth_ops, each on a family that needs it.

Per-layer config overrides (gemma4's `head_dim`), parameters with one slice per layer outside the layer
list (gemma4's per-layer input embeddings), "the first k layers are dense" (deepseek_v3), a layer kind by
period and offset (jamba), index lists found by their name (bamba's `attn_layer_indices`), a layer count
under another key (longcat_flash), identity growth after the last layer for layers that compute by position
(diffllama), and the size guard of the zoo itself.
"""

import pytest
import torch
import transformers
import zoo
from transformers import AutoConfig, AutoModelForCausalLM
from zoo import (
    MAX_PARAMETERS,
    SMALL,
    SPECS,
    TooLarge,
    assert_same_tensors,
    assert_unchanged,
    build_small,
    count_parameters,
    growth_failure,
    input_ids,
    logits,
    read_tensors,
    snapshot,
)

from growth_ops import GrowthSpec, discover_anatomy, grow, grow_checkpoint


def test_size_guard_counts_on_the_meta_device_and_refuses_before_allocating(monkeypatch):
    # blt from the generic config holds 4.6 billion parameters: counted, never allocated.
    assert count_parameters(AutoConfig.for_model("blt", **SMALL)) > 100 * MAX_PARAMETERS
    monkeypatch.setitem(zoo.FAMILY_SMALL, "blt", (SMALL, "the generic config, to trip the guard"))
    with pytest.raises(TooLarge, match=r"still builds [\d,]+ parameters and buffers \(limit 20,000,000\)"):
        build_small("blt")


def test_per_layer_config_overrides_follow_their_source_layers():
    model = build_small("gemma4_text")
    head_dims = [c.head_dim for c in model.config.per_layer_config]
    assert len(set(head_dims)) == 2  # full-attention layers have their own head_dim
    plan = SPECS["stack"].plan_depth(4)
    grow(model, SPECS["stack"])
    assert [c.head_dim for c in model.config.per_layer_config] == [head_dims[s] for s in plan.sources]
    assert [layer.self_attn.head_dim for layer in model.model.layers] == [head_dims[s] for s in plan.sources]


def test_parameters_with_one_slice_per_layer_are_regrown_slice_by_slice():
    model = build_small("gemma4_text")
    old = model.model.embed_tokens_per_layer.weight.detach().clone().chunk(4, dim=1)
    parameter = model.model.embed_tokens_per_layer.weight
    plan = SPECS["interleave"].plan_depth(4)
    grow(model, SPECS["interleave"])
    new = model.model.embed_tokens_per_layer.weight
    assert new is parameter  # the same Parameter (an optimizer's reference stays valid), regrown in place
    assert all(
        torch.equal(chunk, old[s]) for chunk, s in zip(new.chunk(plan.num_layers, dim=1), plan.sources, strict=True)
    )
    assert growth_failure("gemma4_text", "interleave") is None


def test_on_disk_growth_regrows_parameters_with_one_slice_per_layer(tmp_path):
    model = build_small("gemma4_text")
    model.save_pretrained(tmp_path / "src")
    growth = grow_checkpoint(tmp_path / "src", tmp_path / "dst", SPECS["interleave"])
    # The per-layer input embeddings (a slice of columns per layer) and their projection (a slice of rows).
    assert growth.layer_slices == {
        "model.embed_tokens_per_layer.weight": 1,
        "model.per_layer_model_projection.weight": 0,
    }
    grow(model, SPECS["interleave"]).save_pretrained(tmp_path / "memory")
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst"))
    with pytest.raises(ValueError, match=r"one slice per layer .*embed_tokens_per_layer.*depth only"):
        grow_checkpoint(tmp_path / "src", tmp_path / "wide", GrowthSpec(depth=2, width=2))
    assert not (tmp_path / "wide").exists()


def test_first_k_dense_layers_stay_first_or_growth_is_refused():
    model = build_small("deepseek_v3")
    dense = [type(layer.mlp).__name__ for layer in model.model.layers]
    before = snapshot(model)
    refusal = r"first_k_dense_replace=1\) and can say nothing else.*positions \[0, 3\].*layer_map=\[0, 0, 1, 2, 1, 2\]"
    with pytest.raises(ValueError, match=refusal):
        grow(model, SPECS["stack"])
    assert_unchanged(model, before)
    plan = SPECS["identity"].plan_depth(3)
    grow(model, SPECS["identity"])
    assert model.config.first_k_dense_replace == plan.sources.count(0) == 2
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == [dense[s] for s in plan.sources]


def test_the_layer_map_the_dense_prefix_refusal_offers_grows():
    model = build_small("deepseek_v3")
    dense = [type(layer.mlp).__name__ for layer in model.model.layers]
    grow(model, GrowthSpec(layer_map=[0, 0, 1, 2, 1, 2]))
    assert model.config.first_k_dense_replace == 2
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == [dense[s] for s in (0, 0, 1, 2, 1, 2)]


def test_a_per_layer_list_that_marks_the_dense_layers_lets_a_stack_put_them_anywhere(tmp_path):
    # exaone_moe builds each layer's MLP from `mlp_layer_types`, which is remapped; its `first_k_dense_replace`
    # only filled that list in, so a stack that puts a dense copy after sparse layers is expressible.
    model = build_small("exaone_moe")
    model.save_pretrained(tmp_path / "src")
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    grow(model, SPECS["stack"])
    assert model.config.mlp_layer_types == ["dense", "sparse", "sparse"] * 2
    assert model.config.first_k_dense_replace == 1
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == kinds * 2
    grow_checkpoint(tmp_path / "src", tmp_path / "dst", SPECS["stack"])
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dst")
    assert [type(layer.mlp).__name__ for layer in reloaded.model.layers] == kinds * 2


def test_periodic_layer_kinds_get_a_new_period_or_growth_is_refused():
    model = build_small("jamba")
    kinds = list(zip(model.config.layers_block_type, model.config.layers_num_experts, strict=True))
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"attn_layer_period=4, attn_layer_offset=1\), but .*positions \[2, 3\]"):
        grow(model, SPECS["identity"])
    assert_unchanged(model, before)
    spec = GrowthSpec(layer_map=(0, 1, 0, 1, 0, 1))  # attention at 1, 3, 5: the period becomes 2
    grow(model, spec)
    grown = list(zip(model.config.layers_block_type, model.config.layers_num_experts, strict=True))
    assert grown == [kinds[s] for s in spec.plan_depth(4).sources]
    assert (model.config.attn_layer_period, model.config.attn_layer_offset) == (2, 1)


def test_a_sparse_range_is_moved_to_the_copies_of_its_layers_or_growth_is_refused(tmp_path):
    # ERNIE 4.5 MoE: layer i is sparse when (i + 1) % interval == 0 and start <= i <= end (end: the last index).
    model = build_small("ernie4_5_moe")
    model.save_pretrained(tmp_path / "src")
    kinds = [type(layer.mlp).__name__ for layer in model.model.layers]
    assert (model.config.moe_layer_start_index, model.config.moe_layer_end_index) == (1, 2)
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=r"positions \[1, 2, 4, 5\], which no start, end and interval .*\[0, 0, 1, 2, 1, 2\]"
    ):
        grow(model, SPECS["stack"])
    assert_unchanged(model, before)
    plan = SPECS["identity"].plan_depth(3)
    grow(model, SPECS["identity"])
    assert (model.config.moe_layer_start_index, model.config.moe_layer_end_index) == (2, 5)
    assert [type(layer.mlp).__name__ for layer in model.model.layers] == [kinds[s] for s in plan.sources]
    grow_checkpoint(tmp_path / "src", tmp_path / "dst", GrowthSpec(layer_map=[0, 0, 1, 2, 1, 2]))
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "dst")
    assert [type(layer.mlp).__name__ for layer in reloaded.model.layers] == [kinds[s] for s in (0, 0, 1, 2, 1, 2)]


def test_index_lists_named_for_layers_are_found_and_remapped():
    model = build_small("bamba")
    assert "attn_layer_indices" in discover_anatomy(model).index_list_keys
    grow(model, SPECS["stack"])
    assert model.config.attn_layer_indices == [1, 3, 5, 7]
    assert growth_failure("bamba", "stack") is None


def test_layer_count_under_another_key_is_read_from_the_table():
    model = build_small("longcat_flash")
    assert discover_anatomy(model).num_layers_key == "num_layers"
    ids = input_ids()
    grow(model, SPECS["stack"])
    assert model.config.num_layers == 6 and len(model.model.layers) == 6
    assert logits(model, ids).shape[-1] == model.config.vocab_size
    assert growth_failure("longcat_flash", "stack") is None


def test_a_model_grows_after_it_was_saved(tmp_path):
    """save_pretrained leaves config.dtype a string in memory; Apertus builds its xIELU from it."""
    model = build_small("apertus")
    model.save_pretrained(tmp_path / "saved")
    assert isinstance(model.config.dtype, str)
    ids = input_ids()
    before = logits(model, ids)
    grown = grow(model, GrowthSpec(depth=2, depth_method="identity"))
    assert len(grown.model.layers) == 6
    torch.testing.assert_close(logits(grown, ids), before, rtol=0, atol=1e-5)


@pytest.mark.parametrize(
    "model_type, method, says",
    [
        (
            "modernbert-decoder",
            "identity",
            r"copy of layer 0 at position 1, .* with \['attn_norm.weight'\] \(like source layers \[1, 2\]\)",
        ),
    ],
)
def test_a_copy_where_the_grown_config_builds_its_layer_otherwise_is_refused_naming_both(model_type, method, says):
    """modernbert-decoder builds no `attn_norm` in layer 0: the config cannot move it."""
    model = build_small(model_type)
    before = snapshot(model)
    with pytest.raises(ValueError, match=rf"this way puts a {says}: the model builds its layers by position"):
        grow(model, SPECS[method])
    assert_unchanged(model, before)


@pytest.mark.parametrize(
    ("model_type", "lists"),
    [
        ("hrm_text", r"2 lists of its blocks \(\{'model.L_module.layers': '3 x HrmTextDecoderLayer', 'model.H_module"),
        ("blt", r"5 lists of its blocks \(\{'model.local_encoder.layers': '3 x BltTransformerLayer'.*4 of them"),
    ],
)
def test_a_model_of_several_block_stacks_is_refused_naming_every_stack(model_type, lists):
    """hrm_text runs an L and an H stack in cycles, blt a byte encoder, a global transformer and a decoder:
    no one list is the decoder whose depth the config sets."""
    with pytest.raises(ValueError, match=rf"No decoder layer list found.*runs {lists}.*several stacks.*layers_attr="):
        discover_anatomy(build_small(model_type))


def test_a_model_whose_layers_are_parallel_lists_of_parts_is_refused_saying_so():
    """XLM holds layer i as attentions[i], layer_norm1[i], ffns[i] and layer_norm2[i]: no list of blocks."""
    with pytest.raises(ValueError, match=r"\(model_type='xlm'\): it keeps the parts of each layer in 4 parallel "):
        discover_anatomy(build_small("xlm"))


@pytest.mark.parametrize("method", ["stack", "identity"])
def test_a_copy_leaves_out_what_the_layer_built_at_its_position_has_not(tmp_path, method):
    """rwkv builds `pre_ln` (the embeddings' norm, run by layer 0) in layer 0 alone: a copy of layer 0 placed
    elsewhere leaves it out, in memory and on disk, and identity growth stays exact where rwkv's inference-time
    rescaling is off (with it on, identity growth is refused naming `rescale_every`)."""
    model = build_small("rwkv")
    with pytest.raises(ValueError, match=r"Identity growth is impossible for rwkv with rescale_every=6: .*= 0"):
        grow(build_small("rwkv"), SPECS["identity"])
    model.config.rescale_every = 0
    model.save_pretrained(tmp_path / "src")
    ids = input_ids()
    before = logits(model, ids)
    grow(model, SPECS[method])
    blocks = model.rwkv.blocks
    assert [hasattr(block, "pre_ln") for block in blocks] == [True] + [False] * (len(blocks) - 1)
    if method == "identity":
        torch.testing.assert_close(logits(model, ids), before, rtol=0, atol=1e-5)
    model.save_pretrained(tmp_path / "memory")
    grow_checkpoint(tmp_path / "src", tmp_path / "dst", SPECS[method])
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst"))


def test_layers_held_rescaled_by_their_index_are_not_moved_to_another_factor():
    """rwkv divides block i's output projections by 2 ** (i // rescale_every) in place at inference: a block
    moved across such a boundary is refused until a training-mode forward has restored the weights."""
    model = build_small("rwkv")
    model.config.rescale_every = 2
    ids = input_ids()
    logits(model, ids)  # eval mode: the blocks are now held rescaled
    before = snapshot(model)
    with pytest.raises(
        ValueError, match=r"layers_are_rescaled=True, rescale_every=2\): layer 0 would move to position 3"
    ):
        grow(model, SPECS["stack"])
    assert_unchanged(model, before)
    model.train()
    with torch.no_grad():
        model(ids)  # restores the weights
    expected = [block.attention.output.weight.clone() for block in model.rwkv.blocks]
    grow(model, SPECS["stack"])
    assert all(torch.equal(b.attention.output.weight, expected[i % 3]) for i, b in enumerate(model.rwkv.blocks))


def test_layers_that_compute_by_position_grow_by_identity_with_every_copy_after_the_last_layer():
    # diffllama's lambda_init follows layer_idx: a copy after each layer would move the originals to new positions.
    model = build_small("diffllama")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'lambda_init'.* depends on its position.* after the last layer"):
        grow(model, SPECS["identity"])
    assert_unchanged(model, before)
    assert growth_failure("diffllama", "identity-end") is None


def test_a_post_norm_block_is_no_identity_even_on_an_input_its_norm_leaves_as_it_is():
    # openai-gpt's blocks end in a LayerNorm. In a random model (norm weights 1, biases 0) the last layer's input
    # is already normalised, so its zeroed copy after it returns that input unchanged: only the input scaled and
    # shifted per channel shows that the copy is no identity (a trained model's norms would show it too).
    model = build_small("openai-gpt")
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"layer 2 \(Block.*copied to position 3\) an exact identity: .*post-norm"):
        grow(model, zoo.spec_for("identity-end", 3))
    assert_unchanged(model, before)


def test_a_branch_scale_that_follows_the_layer_count_is_kept_by_its_config_value(tmp_path):
    # MiniCPM3 scales every residual branch by scale_depth / sqrt(num_hidden_layers): the kept layers of an identity
    # growth keep their scale only if scale_depth grows by sqrt(new / old layer count).
    model = build_small("minicpm3")
    model.save_pretrained(tmp_path / "src")
    expected = logits(model, input_ids())
    scales = [layer.residual_scale for layer in model.model.layers]
    grow(model, SPECS["identity"])
    assert model.config.scale_depth == pytest.approx(1.4 * 2**0.5)
    assert [model.model.layers[j].residual_scale for j in (0, 2, 4)] == pytest.approx(scales, rel=1e-12)
    torch.testing.assert_close(logits(model, input_ids()), expected, rtol=0, atol=1e-5)
    growth = grow_checkpoint(tmp_path / "src", tmp_path / "dst", SPECS["identity"])
    assert growth.config.scale_depth == model.config.scale_depth
    model.save_pretrained(tmp_path / "memory")
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst"))


class _ReadsScaleDepthAtForward(transformers.MiniCPM3ForCausalLM):
    """A MiniCPM3 whose forward also reads scale_depth: rescaling it would change the logits."""

    def forward(self, *args, **kwargs):
        output = super().forward(*args, **kwargs)
        output.logits = output.logits * self.config.scale_depth
        return output


def test_a_config_value_the_model_also_reads_at_forward_time_is_not_rescaled():
    model = _ReadsScaleDepthAtForward(build_small("minicpm3").config).eval()
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"'residual_scale'.* depends on the layer count.* no config value"):
        grow(model, SPECS["identity"])
    assert_unchanged(model, before)
    assert model.config.scale_depth == 1.4


def test_on_disk_a_block_that_is_an_identity_at_init_values_alone_is_refused(tmp_path):
    # zaya scales its residual by (residual + residual_bias) * residual_scale: the disk probe's random model holds
    # them at zeros and ones, the checkpoint (trained) does not; before the probe's weights were moved off their
    # init values, this checkpoint grew on disk with logits changed by 0.17.
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(zoo.small_config("zaya")).eval()
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            if name.endswith(("residual_scale", "residual_bias")):
                parameter.add_(torch.randn_like(parameter), alpha=0.1)
    model.save_pretrained(tmp_path / "src")
    with pytest.raises(ValueError, match=r"layer 2 \(ZayaDecoderLayer.*copied to position 3\) an exact identity"):
        grow_checkpoint(tmp_path / "src", tmp_path / "dst", zoo.spec_for("identity-end", 3))
    assert not (tmp_path / "dst").exists()
