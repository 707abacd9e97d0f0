"""MTLMConfig and MTLMForCausalLM: presets, validation, Auto registration, attention backends, cache."""

import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoModelForCausalLM

import mtlm_hf
from mtlm_hf import MTLMConfig, MTLMForCausalLM, MTLMModel

STYLES = ["m1-tiny", "m2-tiny"]


def build(preset: str, seed: int = 0, **overrides) -> MTLMForCausalLM:
    torch.manual_seed(seed)
    return AutoModelForCausalLM.from_config(MTLMConfig.from_preset(preset, **overrides)).eval()


def tokens(batch: int = 3, seq: int = 11, vocab: int = 99, seed: int = 1) -> torch.Tensor:
    return torch.randint(3, vocab, (batch, seq), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize(
    "preset, expected",
    [("m1-base", 109.5e6), ("m1", 194.5e6), ("m2", 41.5e6)],
)
def test_preset_parameter_count_within_half_percent(preset, expected):
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset(preset))
    count = sum(p.numel() for p in model.parameters())
    assert abs(count / expected - 1) < 0.005, count


def test_preset_shapes_match_the_originals():
    m1 = MTLMConfig.from_preset("m1-base")
    assert (m1.hidden_size, m1.num_hidden_layers, m1.num_attention_heads, m1.intermediate_size) == (768, 16, 12, 1280)
    assert m1.rope_parameters["rope_theta"] == 10000.0 and m1.tie_word_embeddings and not m1.attention_bias
    assert MTLMConfig.from_preset("m1").num_hidden_layers == 32
    m2 = MTLMConfig.from_preset("m2")
    assert (m2.hidden_size, m2.num_hidden_layers, m2.num_attention_heads, m2.intermediate_size) == (384, 12, 6, 1024)
    assert m2.position_embedding_type == "learned" and m2.mlp_type == "plain"
    assert m2.attention_bias and m2.mlp_bias and not m2.tie_word_embeddings


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ValueError, match="m1-base, m1, m2"):
        MTLMConfig.from_preset("m3")


def test_misspelt_preset_names_the_nearest_one():
    with pytest.raises(ValueError, match=r"Unknown MTLM preset 'm1-bsae'; did you mean 'm1-base'\?"):
        MTLMConfig.from_preset("m1-bsae")


@pytest.mark.parametrize(
    "override, nearest",
    [
        ("hiden_size", "hidden_size"),
        ("num_hidden_layer", "num_hidden_layers"),
        ("attn_implementaton", "attn_implementation"),
        ("n_layer", "num_hidden_layers"),  # nanoGPT's name
        ("rope_theta", "rope_parameters"),  # the preset's rope_parameters would silently win
    ],
)
def test_misspelt_override_raises_naming_the_key_and_the_nearest_field(override, nearest):
    with pytest.raises(ValueError, match=rf"Unknown MTLMConfig field '{override}'.*did you mean '{nearest}'\?"):
        MTLMConfig.from_preset("m1-tiny", **{override: 64})


def test_override_far_from_every_field_raises_naming_it():
    with pytest.raises(ValueError, match="'zzz'.*no valid name is close"):
        MTLMConfig.from_preset("m1-tiny", zzz=1)


def test_from_preset_takes_llama_field_names_as_overrides():
    cfg = MTLMConfig.from_preset(
        "m1-base",
        vocab_size=1000,
        hidden_size=256,
        intermediate_size=512,
        num_hidden_layers=3,
        num_attention_heads=8,
        num_key_value_heads=2,
        max_position_embeddings=64,
        rms_norm_eps=1e-5,
        rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
        tie_word_embeddings=False,
        attention_bias=True,
        mlp_bias=True,
    )
    assert cfg.num_key_value_heads == 2 and cfg.head_dim == 32 and cfg.rope_parameters["rope_theta"] == 500000.0
    assert len(cfg.layer_types) == 3


@pytest.mark.parametrize(
    "overrides, field",
    [
        ({"hidden_size": 100, "num_attention_heads": 12}, "hidden_size"),
        ({"num_key_value_heads": 5}, "num_key_value_heads"),
        ({"position_embedding_type": "alibi"}, "position_embedding_type"),
        ({"mlp_type": "moe"}, "mlp_type"),
        ({"layer_types": ["full_attention"] * 3}, "layer_types"),
        ({"layer_types": ["full_attention"] * 15 + ["chunked"]}, "layer_types"),
    ],
)
def test_impossible_config_raises_value_error_naming_the_field(overrides, field):
    with pytest.raises(ValueError, match=field):
        MTLMConfig.from_preset("m1-base", **overrides)


def test_auto_classes_know_mtlm():
    cfg = AutoConfig.for_model("mtlm", **mtlm_hf.MTLM_PRESETS["m1-tiny"])
    assert isinstance(cfg, MTLMConfig)
    assert isinstance(AutoModel.from_config(cfg), MTLMModel)
    assert isinstance(AutoModelForCausalLM.from_config(cfg), MTLMForCausalLM)


def test_config_round_trip(tmp_path):
    cfg = MTLMConfig.from_preset("m2", layer_types=["sliding_attention"] * 12, sliding_window=256)
    cfg.save_pretrained(tmp_path)
    assert AutoConfig.from_pretrained(tmp_path).to_diff_dict() == cfg.to_diff_dict()


@pytest.mark.parametrize("preset", STYLES)
def test_tied_embeddings_follow_the_config(preset):
    model = build(preset)
    assert (model.lm_head.weight is model.model.embed_tokens.weight) == model.config.tie_word_embeddings


@pytest.mark.parametrize("preset", STYLES)
@pytest.mark.parametrize("with_padding", [False, True])
def test_eager_and_sdpa_logits_agree(preset, with_padding):
    model = build(preset)
    ids = tokens()
    mask = torch.ones_like(ids)
    if with_padding:
        mask[0, :4] = 0  # left padding on one row
    logits = {}
    for impl in ("eager", "sdpa"):
        model.set_attn_implementation(impl)
        logits[impl] = model(ids, attention_mask=mask).logits
    keep = mask.bool()
    assert torch.allclose(logits["eager"][keep], logits["sdpa"][keep], atol=1e-5, rtol=0)


@torch.no_grad()  # FlexAttention has no backward on CPU
def test_flex_attention_logits_agree_with_eager():
    model = build("m1-tiny")
    ids = tokens(batch=2, seq=16)
    eager = model(ids).logits
    model.set_attn_implementation("flex_attention")
    # transformers switches only models that pick attention through `ALL_ATTENTION_FUNCTIONS.get_interface`.
    assert model.config._attn_implementation == "flex_attention"
    flex = model(ids).logits
    assert torch.allclose(eager, flex, atol=1e-5, rtol=0)


def test_sliding_window_layers_restrict_attention():
    full = build("m1-tiny")
    sliding = build("m1-tiny", layer_types=["sliding_attention", "full_attention"], sliding_window=3)
    sliding.load_state_dict(full.state_dict())
    ids = tokens(batch=2, seq=10)
    # The window only matters once a position has more than `sliding_window` predecessors.
    assert torch.allclose(full(ids).logits[:, :3], sliding(ids).logits[:, :3], atol=1e-6)
    assert not torch.allclose(full(ids).logits[:, 5:], sliding(ids).logits[:, 5:], atol=1e-3)
    sliding.set_attn_implementation("eager")
    assert sliding.config._attn_implementation == "eager"
    eager = sliding(ids).logits
    sliding.set_attn_implementation("sdpa")
    assert torch.allclose(eager, sliding(ids).logits, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "preset, overrides",
    [
        ("m1-tiny", {}),
        ("m2-tiny", {}),
        ("m1-tiny", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 4}),
    ],
)
def test_generate_with_cache_equals_without(preset, overrides):
    model = build(preset, **overrides)
    ids = tokens(batch=2, seq=5)
    kwargs = {"max_new_tokens": 32, "min_new_tokens": 32, "do_sample": False, "attention_mask": torch.ones_like(ids)}
    cached = model.generate(ids, use_cache=True, **kwargs)
    uncached = model.generate(ids, use_cache=False, **kwargs)
    assert cached.shape == (2, 37)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("preset", STYLES)
def test_incremental_decoding_matches_full_forward(preset):
    model = build(preset)
    ids = tokens(batch=2, seq=12)
    full = model(ids).logits
    out = model(ids[:, :7], use_cache=True)
    step_logits = [out.logits]
    cache = out.cache
    for t in range(7, 12):
        out = model(ids[:, t : t + 1], cache=cache, use_cache=True)
        cache = out.cache
        step_logits.append(out.logits)
    assert torch.allclose(full, torch.cat(step_logits, dim=1), atol=1e-5, rtol=0)


def test_cache_passed_under_its_pre_5_24_name_is_still_used():
    model = build("m1-tiny")
    ids = tokens(batch=2, seq=8)
    cache = model(ids[:, :7], use_cache=True).cache
    with pytest.warns(FutureWarning, match="past_key_values"):
        step = model(ids[:, 7:], past_key_values=cache, use_cache=True)
    torch.testing.assert_close(step.logits[:, -1], model(ids).logits[:, -1], atol=1e-5, rtol=0)


@pytest.mark.parametrize("preset", STYLES)
def test_hidden_states_and_attentions_are_returned(preset):
    model = build(preset, attn_implementation="eager")
    out = model(tokens(), output_hidden_states=True, output_attentions=True)
    n = model.config.num_hidden_layers
    assert len(out.hidden_states) == n + 1 and len(out.attentions) == n
    assert out.attentions[0].shape == (3, model.config.num_attention_heads, 11, 11)


@pytest.mark.parametrize("preset", STYLES)
def test_gradient_checkpointing_gives_the_same_gradients(preset):
    model = build(preset).train()
    ids = tokens()
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        if checkpointing:
            model.activation_checkpointing_enable()
        model(ids, labels=ids).loss.backward()
        grads.append([p.grad.clone() for p in model.parameters()])
    assert model.model.layers[0].gradient_checkpointing
    for plain, checkpointed in zip(*grads, strict=True):
        assert torch.allclose(plain, checkpointed, atol=1e-6)


@pytest.mark.parametrize("preset", STYLES)
def test_bfloat16_forward_and_backward(preset):
    model = build(preset).to(torch.bfloat16).train()
    ids = tokens()
    out = model(ids, labels=ids)
    out.loss.backward()
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.loss)
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters())
    fp32 = build(preset)(ids, labels=ids).loss
    assert abs(out.loss.item() - fp32.item()) < 0.05


def test_dropout_switches_are_used_in_training_only():
    model = build("m2-tiny", embedding_dropout=0.5, hidden_dropout=0.5, attention_dropout=0.5)
    ids = tokens()
    assert torch.equal(model(ids).logits, model(ids).logits)
    model.train()
    assert not torch.equal(model(ids).logits, model(ids).logits)


def test_learned_positions_are_used():
    model = build("m2-tiny")
    ids = tokens()
    before = model(ids).logits
    with torch.no_grad():
        model.model.embed_positions.weight.add_(1.0)
    assert not torch.allclose(before, model(ids).logits)


def test_save_pretrained_writes_safetensors_auto_map_and_code(tmp_path):
    model = build("m2-tiny")
    model.save_pretrained(tmp_path)
    files = {p.name for p in tmp_path.iterdir()}
    assert {"model.safetensors", "config.json", "configuration_mtlm.py", "modeling_mtlm.py"} <= files
    assert not any(name.endswith((".bin", ".pt", ".pkl")) for name in files)
    auto_map = AutoConfig.from_pretrained(tmp_path).auto_map
    assert auto_map == {
        "AutoConfig": "configuration_mtlm.MTLMConfig",
        "AutoModel": "modeling_mtlm.MTLMModel",
        "AutoModelForCausalLM": "modeling_mtlm.MTLMForCausalLM",
    }
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = tokens()
    assert torch.equal(model(ids).logits, reloaded(ids).logits)


@pytest.mark.parametrize("preset", STYLES)
def test_left_padded_batch_generates_what_each_row_generates_alone(preset):
    model = build(preset, pad_token_id=0)
    rows = [[5, 6, 7, 8, 9, 10], [11, 12, 13]]
    kwargs = {"max_new_tokens": 8, "min_new_tokens": 8, "do_sample": False}
    alone = [
        model.generate(torch.tensor([r]), attention_mask=torch.ones(1, len(r), dtype=torch.long), **kwargs)[0]
        for r in rows
    ]
    batch = torch.tensor([rows[0], [0, 0, 0, *rows[1]]])
    mask = torch.tensor([[1] * 6, [0, 0, 0, 1, 1, 1]])
    together = model.generate(batch, attention_mask=mask, **kwargs)
    assert torch.equal(together[0], alone[0])
    assert torch.equal(together[1, 3:], alone[1])
