"""`MTLMConfig.fast_path` computes the plain path's numbers: logits, loss and gradients within float tolerance.

Compiling is slow on CPU, so the compiled models are module-scoped and shared; all layers share one graph.
"""

import copy
import functools
import types

import pytest
import torch
from torch._dynamo.utils import counters

import growth_ops
from mtlm_hf import MTLMConfig, MTLMForCausalLM, modeling_mtlm, to_llama

TOLERANCES = {"fp32": {"atol": 2e-5, "rtol": 1e-4}, "bf16": {"atol": 3e-2, "rtol": 3e-2}}


def _batch():
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(3, 99, (3, 7), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    attention_mask[0, :3] = 0  # left padding
    labels = input_ids.masked_fill(attention_mask == 0, -100)
    return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}


def _train_step(model, precision="fp32", **overrides):
    """Logits, loss and every parameter's gradient of one forward/backward in train mode."""
    model.train().zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
        out = model(**{**_batch(), **overrides})
    out.loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}
    return out.logits.detach().float(), out.loss.detach().float(), grads


def _assert_same_numbers(plain, fast, precision="fp32"):
    tolerance = TOLERANCES[precision]
    torch.testing.assert_close(fast[0], plain[0], **tolerance)
    torch.testing.assert_close(fast[1], plain[1], **tolerance)
    assert fast[2].keys() == plain[2].keys()
    for name in plain[2]:
        torch.testing.assert_close(fast[2][name].float(), plain[2][name].float(), **tolerance, msg=name)


def _fast_copy(model, fast_path="compile"):
    fast = copy.deepcopy(model)
    fast.config.fast_path = fast_path
    return fast


@functools.cache
def _models(preset):
    """A plain model and its fast copy, shared by the tests of this module (each graph compiles once)."""
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset(preset))
    return plain, _fast_copy(plain)


@pytest.fixture(params=["m1-tiny", "m2-tiny"])
def models(request):
    return _models(request.param)


def test_fast_path_gives_plain_logits_loss_and_gradients_with_padding(models):
    plain, fast = models
    _assert_same_numbers(_train_step(plain), _train_step(fast))


def test_fast_path_gives_plain_numbers_in_bf16_autocast():
    # One preset, to keep the file fast: autocast does not depend on the MLP or position type.
    plain, fast = _models("m1-tiny")
    _assert_same_numbers(_train_step(plain, "bf16"), _train_step(fast, "bf16"), "bf16")


def test_fast_path_survives_depth_growth(models):
    plain, fast = models
    _train_step(fast)  # compile before growing
    plain, fast = copy.deepcopy(plain), copy.deepcopy(fast)
    for model in (plain, fast):
        growth_ops.grow_depth(model, factor=2)
        # Make the copies differ from their sources: a compiled call still bound to the source layer
        # would then give other numbers.
        generator = torch.Generator().manual_seed(1)
        num_layers = model.config.num_hidden_layers
        with torch.no_grad():
            for p in model.model.layers[num_layers // 2 :].parameters():
                p.add_(0.05 * torch.randn(p.shape, generator=generator))
    assert fast.config.num_hidden_layers == 2 * models[0].config.num_hidden_layers
    assert fast.config.fast_path == "compile"
    graphs_before = counters["stats"]["unique_graphs"]
    _assert_same_numbers(_train_step(plain), _train_step(fast))
    # The four layers share one graph (their parameters are graph inputs), recompiled once for the
    # grown `layer_types`; the loss graph is reused.
    assert counters["stats"]["unique_graphs"] - graphs_before <= 1


def test_sliding_window_layers_share_two_graphs_and_give_plain_numbers():
    torch.manual_seed(0)
    layer_types = ["sliding_attention", "full_attention"] * 5  # more layers than dynamo's recompile limit (8)
    config = MTLMConfig.from_preset("m1-tiny", num_hidden_layers=10, layer_types=layer_types, sliding_window=3)
    plain = MTLMForCausalLM(config)
    fast = _fast_copy(plain)
    graphs_before = counters["stats"]["unique_graphs"]
    _assert_same_numbers(_train_step(plain), _train_step(fast))
    # One graph per kind of layer, however many layers (and the loss graph, if not compiled already).
    assert counters["stats"]["unique_graphs"] - graphs_before <= 3


def test_fast_path_with_gradient_checkpointing_gives_plain_numbers():
    plain, fast = _models("m1-tiny")
    fast = copy.deepcopy(fast)
    fast.activation_checkpointing_enable()
    _assert_same_numbers(_train_step(plain), _train_step(fast))


def test_fast_path_survives_save_and_load(models, tmp_path):
    plain, fast = models
    fast.save_pretrained(tmp_path)
    loaded = MTLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.config.fast_path == "compile"
    _assert_same_numbers(_train_step(plain), _train_step(loaded))


def test_fast_path_loads_as_remote_code_and_gives_plain_logits(tmp_path, run_without_mtlm):
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny"))
    _fast_copy(plain).save_pretrained(tmp_path)
    logits, loss, _ = _train_step(plain)
    report = run_without_mtlm(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path)!r}, trust_remote_code=True).train()
        assert type(model).__module__.startswith("transformers_modules")
        assert model.config.fast_path == "compile"
        batch = {{k: torch.tensor(v) for k, v in { ({k: v.tolist() for k, v in _batch().items()})!r}.items()}}
        out = model(**batch)  # the train graph, as in this process: inductor's cache may hold it
        out.loss.backward()
        print(json.dumps({{"logits": out.logits.tolist(), "loss": out.loss.item()}}))
        """
    )
    torch.testing.assert_close(torch.tensor(report["logits"]), logits, **TOLERANCES["fp32"])
    torch.testing.assert_close(torch.tensor(report["loss"]), loss, **TOLERANCES["fp32"])


def test_fast_path_generation_uses_the_cache_and_matches_plain(models):
    plain, fast = models
    prompt = _batch()["input_ids"][1:]
    kwargs = {"max_new_tokens": 4, "do_sample": False, "attention_mask": torch.ones_like(prompt)}
    torch.testing.assert_close(fast.eval().generate(prompt, **kwargs), plain.eval().generate(prompt, **kwargs))


def _reference_liger():
    """liger's functional API written in torch, to test the `fast_path="liger"` wiring on CPU."""

    def rms_norm(x, weight, eps):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)

    def fused_linear_cross_entropy(x, weight, target, ignore_index=-100, reduction="mean"):
        logits = (x @ weight.t()).float()
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)

    return types.SimpleNamespace(
        liger_rms_norm=rms_norm,
        liger_rope=modeling_mtlm.apply_rotary_pos_emb,
        liger_swiglu=lambda a, b: torch.nn.functional.silu(a) * b,
        liger_fused_linear_cross_entropy=fused_linear_cross_entropy,
    )


@pytest.mark.parametrize("preset", ["m1-tiny", "m2-tiny"])
def test_liger_fast_path_wiring_gives_plain_loss_and_gradients(preset, monkeypatch):
    monkeypatch.setattr(modeling_mtlm, "_liger_functional", _reference_liger)
    monkeypatch.setattr(modeling_mtlm, "_uses_liger", lambda config, hidden_states: config.fast_path == "liger")
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset(preset))
    liger = _fast_copy(plain, "liger")
    expected = _train_step(plain)
    liger.train().zero_grad()
    out = liger(**_batch())
    assert out.logits is None  # fused linear cross-entropy: no logits in training
    out.loss.backward()
    grads = {name: p.grad for name, p in liger.named_parameters() if p.grad is not None}
    _assert_same_numbers(expected, (expected[0], out.loss.detach(), grads))
    # In eval mode the logits come back.
    with torch.no_grad():
        torch.testing.assert_close(liger.eval()(**_batch()).logits, plain.eval()(**_batch()).logits)


@pytest.mark.parametrize("value", ["fast", "", "Compile"])
def test_invalid_fast_path_raises_naming_the_field(value):
    with pytest.raises(ValueError, match="fast_path"):
        MTLMConfig.from_preset("m1-tiny", fast_path=value)


def test_fast_path_is_a_config_field_off_by_default_and_kept_out_of_llama():
    assert MTLMConfig.from_preset("m1-base").fast_path is None
    config = MTLMConfig.from_preset("m1-tiny", fast_path="liger")
    assert config.to_dict()["fast_path"] == "liger"
    assert MTLMConfig.from_dict(config.to_dict()).fast_path == "liger"
    llama = to_llama(MTLMForCausalLM(config))
    assert not hasattr(llama.config, "fast_path") or llama.config.fast_path is None
