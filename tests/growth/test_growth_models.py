"""Depth growth on a zoo of tiny random Transformers decoders: every growth must leave the model whole."""

import copy
import threading

import pytest
import torch
from peft import LoraConfig, get_peft_model
from torch import nn
from transformers import AutoConfig, AutoModelForCausalLM, AutoModelForImageTextToText, AutoModelForSeq2SeqLM
from zoo import IN_MEMORY_ARCHITECTURES, LLAMA_LIKE, SPECS, VOCAB, assert_unchanged, build, input_ids, logits, snapshot

from growth_ops import DecoderAnatomy, apply_plan, discover_anatomy, grow, grow_depth, plan_depth


def plan_for(method, num_layers=3):
    """The plan `grow(model, SPECS[method])` applies to a model of `num_layers` layers."""
    return SPECS[method].plan_depth(num_layers)


def decoder_layers(model):
    return model.get_submodule(discover_anatomy(model).layers_path)


GRID = [(arch, method) for arch in IN_MEMORY_ARCHITECTURES for method in SPECS]


@pytest.mark.parametrize("arch, method", GRID)
def test_growth_leaves_config_layers_and_weights_consistent(arch, method):
    model = build(arch)
    anatomy = discover_anatomy(model)
    plan = plan_for(method)
    config = anatomy.layer_config(model)
    per_layer_before = {key: list(getattr(config, key)) for key in anatomy.per_layer_keys}
    index_lists_before = {key: set(getattr(config, key)) for key in anatomy.index_list_keys}
    tied = config.tie_word_embeddings
    ids = input_ids()
    model(ids, output_hidden_states=True)  # installs the output-capture hooks before growth

    grow(model, SPECS[method])
    layers = decoder_layers(model)
    n = plan.num_layers
    assert len(layers) == n
    assert getattr(config, anatomy.num_layers_key) == n == config.num_hidden_layers
    # Every module that holds a layer index holds its new position (the KV-cache slot).
    for j, layer in enumerate(layers):
        indices = {m.layer_idx for m in layer.modules() if isinstance(getattr(m, "layer_idx", None), int)}
        assert indices == {j}
    for key, before in per_layer_before.items():
        assert list(getattr(config, key)) == [before[s] for s in plan.sources], key
    for key, before in index_lists_before.items():
        assert set(getattr(config, key)) == {j for j, s in enumerate(plan.sources) if s in before}, key
    # Per-layer attributes equal those of a model built from scratch with the grown config.
    with torch.device("meta"):
        fresh = type(model)(copy.deepcopy(model.config))
    fresh_modules = dict(fresh.named_modules())
    for name, module in model.named_modules():
        fresh_module = fresh_modules[name]
        expected = {
            k: v for k, v in vars(fresh_module).items() if k != "training" and isinstance(v, int | float | str | None)
        }
        actual = {k: v for k, v in vars(module).items() if k in expected}
        assert actual == expected, name
    assert model.state_dict().keys() == fresh.state_dict().keys()
    # Copies share the model's config object (else `set_attn_implementation` and the like miss them).
    assert {id(m.config) for layer in layers for m in layer.modules() if hasattr(m, "config")} <= {id(config)}
    # No storage shared between layers (a shared copy would train as one layer).
    storages = [p.untyped_storage().data_ptr() for layer in layers for p in layer.parameters()]
    assert len(storages) == len(set(storages))
    if tied:
        assert model.get_output_embeddings().weight is model.get_input_embeddings().weight
    assert {(p.dtype, p.device.type) for p in model.parameters()} == {(torch.float32, "cpu")}
    with torch.no_grad():
        assert len(model(ids, output_hidden_states=True).hidden_states) == n + 1


@pytest.mark.parametrize("arch", IN_MEMORY_ARCHITECTURES)
def test_identity_growth_preserves_logits(arch):
    model = build(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow_depth(model, factor=2, method="identity")
    assert len(decoder_layers(model)) == 6
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch", IN_MEMORY_ARCHITECTURES)
def test_identity_growth_at_given_positions_preserves_logits(arch):
    model = build(arch)
    ids = input_ids()
    before = logits(model, ids)
    grow_depth(model, method="identity", positions=[0, 0, 2])
    assert len(decoder_layers(model)) == 6
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize("arch, method", GRID)
def test_grown_model_generates_the_same_with_and_without_cache(arch, method):
    model = grow(build(arch), SPECS[method])
    ids = input_ids()
    kwargs = dict(max_new_tokens=4, do_sample=False, return_dict_in_generate=True, output_logits=True, pad_token_id=0)
    with_cache = model.generate(ids, attention_mask=torch.ones_like(ids), use_cache=True, **kwargs)
    without = model.generate(ids, attention_mask=torch.ones_like(ids), use_cache=False, **kwargs)
    assert torch.equal(with_cache.sequences, without.sequences)
    torch.testing.assert_close(torch.stack(with_cache.logits), torch.stack(without.logits), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("arch, method", GRID)
def test_grown_model_survives_save_and_load(arch, method, tmp_path):
    model = grow(build(arch), SPECS[method])
    ids = input_ids()
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager", trust_remote_code=True).eval()
    assert loaded.config.num_hidden_layers == model.config.num_hidden_layers
    torch.testing.assert_close(logits(loaded, ids), logits(model, ids), atol=1e-6, rtol=0)


@pytest.mark.parametrize("arch, method", GRID)
def test_training_step_gives_every_new_layer_a_gradient(arch, method):
    model = build(arch)
    plan = plan_for(method)
    grow(model, SPECS[method]).train()
    ids = input_ids()
    model(ids, labels=ids).loss.backward()
    layers = decoder_layers(model)
    for j in plan.new_positions:
        grads = [p.grad for p in layers[j].parameters()]
        assert all(g is not None for g in grads), f"layer {j} has parameters without a gradient"
        assert sum(g.abs().sum() for g in grads) > 0, f"layer {j} got an all-zero gradient"


def test_growth_keeps_dtype():
    model = build("llama", dtype=torch.bfloat16)
    grow_depth(model, factor=2, method="interleave")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model(input_ids()).logits.dtype == torch.bfloat16


def test_non_integer_growth_12_to_20():
    model = build("llama", num_hidden_layers=12)
    ids = input_ids()
    before = logits(model, ids)
    grow_depth(model, num_layers=20, method="identity")
    assert model.config.num_hidden_layers == len(model.model.layers) == 20
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


def test_growth_keeps_activation_checkpointing_on_new_layers():
    model = build("llama")
    model.activation_checkpointing_enable()
    grow_depth(model, factor=2).train()
    assert all(layer.gradient_checkpointing for layer in model.model.layers)
    ids = input_ids()
    model(ids, labels=ids).loss.backward()
    assert model.model.layers[5].mlp.down_proj.weight.grad is not None


@pytest.mark.parametrize("method", list(SPECS))
def test_freeze_source_layers_leaves_only_new_layers_trainable(method):
    model = build("mtlm-m1")
    plan = plan_for(method)
    grow(model, SPECS[method], freeze_source_layers=True)
    layers = decoder_layers(model)
    new = {id(p) for j in plan.new_positions for p in layers[j].parameters()}
    assert {id(p) for p in model.parameters() if p.requires_grad} == new
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=0.1)
    ids = input_ids()
    model.train()(ids, labels=ids).loss.backward()
    optimizer.step()
    changed = {n for n, p in model.named_parameters() if not torch.equal(p, before[n])}
    new_prefixes = tuple(f"model.layers.{j}." for j in plan.new_positions)
    assert changed and all(n.startswith(new_prefixes) for n in changed)


@pytest.mark.parametrize("arch", ["llama", "mtlm-m1", "mtlm-m2"])
def test_lora_after_growth_adapts_only_the_new_layers(arch):
    model = build(arch)
    grow_depth(model, factor=2, freeze_source_layers=True)
    new_layers = [3, 4, 5]
    # A custom model_type has no default LoRA targets in peft: name them.
    lora = LoraConfig(
        r=4, target_modules=["q_proj", "v_proj"], layers_to_transform=new_layers, layers_pattern="layers"
    )
    peft_model = get_peft_model(model, lora)
    adapted = {int(n.split("layers.")[1].split(".")[0]) for n, _ in peft_model.named_parameters() if "lora_" in n}
    assert adapted == set(new_layers)
    trainable = [n for n, p in peft_model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    optimizer = torch.optim.AdamW([p for p in peft_model.parameters() if p.requires_grad], lr=1e-2)
    ids = input_ids()
    peft_model.train()
    peft_model(input_ids=ids, labels=ids).loss.backward()
    optimizer.step()
    lora_b = [p for n, p in peft_model.named_parameters() if "lora_B" in n]
    assert all(p.abs().sum() > 0 for p in lora_b)  # LoRA B starts at zero; one step moved every one


def test_gpt2_inverse_layer_idx_scaling_is_recomputed_for_new_positions(tmp_path):
    model = build("gpt2", scale_attn_by_inverse_layer_idx=True)
    grow_depth(model, factor=2)
    head_dim = 32 // 4
    assert [block.attn.scaling for block in model.transformer.h] == [head_dim**-0.5 / (j + 1) for j in range(6)]
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(logits(loaded, input_ids()), logits(model, input_ids()), atol=1e-6, rtol=0)


def test_gpt2_inverse_layer_idx_scaling_refuses_identity_growth_and_leaves_model_unchanged():
    model = build("gpt2", scale_attn_by_inverse_layer_idx=True)
    before = snapshot(model)
    with pytest.raises(ValueError, match=r"depends on its position.*scale_attn_by_inverse_layer_idx"):
        grow_depth(model, factor=2, method="identity")
    assert_unchanged(model, before)
    # Appending after the last layer moves no layer, so the function can be kept.
    ids = input_ids()
    reference = logits(model, ids)
    grow_depth(model, method="identity", positions=[2, 2])
    torch.testing.assert_close(logits(model, ids), reference, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "arch, setting",
    [("opt", dict(do_layer_norm_before=False)), ("bloom", dict(apply_residual_connection_post_layernorm=True))],
)
def test_post_norm_blocks_refuse_identity_growth(arch, setting):
    model = build(arch, **setting)
    before = snapshot(model)
    key = next(iter(setting))
    with pytest.raises(ValueError, match=rf"Identity growth is impossible for {arch} with {key}="):
        grow_depth(model, factor=2, method="identity")
    assert_unchanged(model, before)


def test_qwen_moe_sparse_step_is_written_out_so_each_layer_keeps_its_structure(tmp_path):
    # With decoder_sparse_step=2 the sparsity of a layer follows from its index (layers 1 and 3 are sparse).
    model = build("qwen3_moe", num_hidden_layers=4, mlp_only_layers=[], decoder_sparse_step=2)
    sparse_before = [hasattr(layer.mlp, "experts") for layer in model.model.layers]
    plan = plan_depth(num_layers=4, factor=2, method="interleave")
    apply_plan(model, plan)
    assert model.config.decoder_sparse_step == 1
    assert [hasattr(layer.mlp, "experts") for layer in model.model.layers] == [sparse_before[s] for s in plan.sources]
    model.save_pretrained(tmp_path)
    loaded = AutoModelForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    torch.testing.assert_close(logits(loaded, input_ids()), logits(model, input_ids()), atol=1e-6, rtol=0)


def test_failed_copy_leaves_model_exactly_as_it_was():
    model = build("mtlm-m1")
    ids = input_ids()
    reference = logits(model, ids)
    # A lock cannot be deep-copied: growth fails while copying the second layer, after the first one.
    model.model.layers[1].self_attn.lock = threading.Lock()
    before = snapshot(model)
    with pytest.raises(TypeError, match="lock"):
        grow_depth(model, factor=2)
    assert_unchanged(model, before)
    torch.testing.assert_close(logits(model, ids), reference, atol=0, rtol=0)


def test_plan_for_another_depth_is_refused():
    model = build("llama")
    with pytest.raises(ValueError, match=r"grows a 4-layer model but 'model.layers' holds 3 layers"):
        apply_plan(model, plan_depth(num_layers=4, factor=2))


def test_anatomy_is_found_generically_and_logged(caplog):
    with caplog.at_level("INFO", logger="growth_ops"):
        anatomy = discover_anatomy(build("gpt2"))
    assert anatomy == DecoderAnatomy(
        layers_path="transformer.h",
        layer_class="GPT2Block",
        num_layers=3,
        route="_no_split_modules",
        model_type="gpt2",
        config_path="",
        num_layers_key="n_layer",
        residual_writers=anatomy.residual_writers,
    )
    assert "transformer.h" in caplog.text and "_no_split_modules" in caplog.text
    assert discover_anatomy(build("opt")).layers_path == "model.decoder.layers"
    assert discover_anatomy(build("gpt_neox")).layers_path == "gpt_neox.layers"
    gemma3 = discover_anatomy(build("gemma3_text"))
    assert gemma3.per_layer_keys == ("layer_types",)
    assert discover_anatomy(build("smollm3")).per_layer_keys == ("no_rope_layers", "layer_types")
    assert discover_anatomy(build("qwen3_moe")).index_list_keys == ("mlp_only_layers",)


class Block(nn.Module):
    def __init__(self, dim, layer_idx):
        super().__init__()
        self.layer_idx = layer_idx
        self.norm = nn.LayerNorm(dim)
        self.attn = nn.ModuleDict({"qkv": nn.Linear(dim, 3 * dim), "out_proj": nn.Linear(dim, dim)})
        self.mlp = nn.Sequential()
        self.mlp.add_module("fc1", nn.Linear(dim, 4 * dim))
        self.mlp.add_module("act", nn.GELU())
        self.mlp.add_module("fc2", nn.Linear(4 * dim, dim))

    def forward(self, x):
        q, k, v = self.attn["qkv"](self.norm(x)).chunk(3, dim=-1)
        x = x + self.attn["out_proj"](torch.softmax(q @ k.transpose(-1, -2), dim=-1) @ v)
        return x + self.mlp(self.norm(x))


class TinyNet(nn.Module):
    def __init__(self, dim=16, depth=3):
        super().__init__()
        self.embed = nn.Embedding(VOCAB, dim)
        self.blocks = nn.ModuleList(Block(dim, i) for i in range(depth))
        self.head = nn.Linear(dim, VOCAB)

    def forward(self, ids):
        x = self.embed(ids)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


@pytest.mark.parametrize("method", list(SPECS))
def test_plain_module_grows_with_layers_attr(method):
    torch.manual_seed(0)
    net = TinyNet().eval()
    ids = input_ids()
    with torch.no_grad():
        before = net(ids)
    anatomy = discover_anatomy(net, layers_attr="blocks")
    assert (anatomy.config_path, anatomy.num_layers_key, anatomy.route) == (None, None, "layers_attr")
    plan = plan_for(method)
    grow(net, SPECS[method], layers_attr="blocks")
    assert [block.layer_idx for block in net.blocks] == list(range(plan.num_layers))
    storages = [p.untyped_storage().data_ptr() for p in net.parameters()]
    assert len(storages) == len(set(storages))
    if method == "identity":
        with torch.no_grad():
            torch.testing.assert_close(net(ids), before, atol=1e-5, rtol=0)


def test_plain_module_without_layers_attr_names_what_was_looked_for():
    with pytest.raises(ValueError, match=r"No decoder layer list found in TinyNet.*_no_split_modules.*layers_attr"):
        grow_depth(TinyNet(), factor=2)
    with pytest.raises(ValueError, match=r"'embed' is a Embedding, not a non-empty nn.ModuleList"):
        grow_depth(TinyNet(), factor=2, layers_attr="embed")


def test_multimodal_model_grows_its_language_model():
    text = dict(LLAMA_LIKE, vocab_size=300, num_hidden_layers=2, num_key_value_heads=2, head_dim=8, sliding_window=4)
    text["layer_types"] = ["sliding_attention", "full_attention"]
    # The vision tower has as many layers as the decoder: only the decoder may be grown.
    vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32)
    config = AutoConfig.for_model(
        "gemma3",
        text_config=text,
        vision_config=dict(vision, patch_size=8),
        mm_tokens_per_image=4,
        image_token_index=299,
        boi_token_index=297,
        eoi_token_index=298,
    )
    torch.manual_seed(0)
    model = AutoModelForImageTextToText.from_config(config, attn_implementation="eager").eval()
    anatomy = discover_anatomy(model)
    assert (anatomy.layers_path, anatomy.config_path) == ("model.language_model.layers", "text_config")
    ids = input_ids(batch=1)
    before = logits(model, ids)
    grow_depth(model, factor=2, method="identity")
    assert model.config.text_config.num_hidden_layers == 4 and model.config.vision_config.num_hidden_layers == 2
    assert model.config.text_config.layer_types == ["sliding_attention"] * 2 + ["full_attention"] * 2
    torch.testing.assert_close(logits(model, ids), before, atol=1e-5, rtol=0)


@pytest.mark.parametrize(
    "model_type, kwargs",
    [
        ("t5", dict(vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)),
        (
            "bart",
            dict(
                vocab_size=VOCAB,
                d_model=32,
                encoder_layers=2,
                decoder_layers=2,
                encoder_ffn_dim=64,
                decoder_ffn_dim=64,
                encoder_attention_heads=4,
                decoder_attention_heads=4,
            ),
        ),
    ],
)
def test_encoder_decoder_is_refused_naming_what_was_looked_for(model_type, kwargs):
    model = AutoModelForSeq2SeqLM.from_config(AutoConfig.for_model(model_type, **kwargs))
    with pytest.raises(ValueError, match=rf"model_type='{model_type}'.*encoder-decoder.*one decoder layer list"):
        grow_depth(model, factor=2)
