"""`model.set_fast_path` computes the plain path's numbers: logits, loss and gradients within float tolerance.

The fast path is a runtime choice, never saved in config.json. Compiling is slow on CPU, so the compiled models are
module-scoped and shared; all layers share one graph.
"""

import collections
import copy
import functools
import json
import logging
import types

import pytest
import torch
from torch._dynamo.utils import counters
from transformers import AutoModelForCausalLM

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
    fast.set_fast_path(fast_path)
    return fast


def _graphs_compiled_by(step) -> int:
    """How many graphs dynamo captured while `step()` ran."""
    before = counters["stats"]["unique_graphs"]
    step()
    return counters["stats"]["unique_graphs"] - before


@functools.cache
def _models(preset):
    """A plain model and its fast copy, shared by the tests of this module (each graph compiles once)."""
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset(preset))
    return plain, _fast_copy(plain)


@pytest.fixture(params=["m1-tiny", "m2-tiny"])
def models(request):
    return _models(request.param)


@pytest.mark.slow  # compiles graphs of its own: 20-50 s on 2 shared cores
def test_fast_path_gives_plain_logits_loss_and_gradients_with_padding(models):
    plain, fast = models
    _assert_same_numbers(_train_step(plain), _train_step(fast))


@pytest.mark.slow  # compiles graphs of its own: 20-50 s on 2 shared cores
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
    assert fast.fast_path == "compile" and fast.model.fast_path == "compile"
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


def test_a_saved_model_carries_no_fast_path_and_loads_plain_unless_asked(models, tmp_path):
    plain, fast = models
    fast.save_pretrained(tmp_path)
    assert "fast_path" not in json.loads((tmp_path / "config.json").read_text())
    loaded = MTLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.fast_path is None
    assert _graphs_compiled_by(lambda: _train_step(loaded)) == 0
    asked = MTLMForCausalLM.from_pretrained(tmp_path, fast_path="compile")
    assert asked.fast_path == "compile" and "fast_path" not in asked.config.to_dict()
    _assert_same_numbers(_train_step(plain), _train_step(asked))


@pytest.mark.slow  # compiles a graph of its own: 20-50 s on 2 shared cores
def test_the_compiled_path_is_taken_and_the_plain_path_compiles_nothing():
    # A shape no other test uses: dynamo's cache cannot hold its graphs, so a compiled step must capture some.
    torch.manual_seed(0)
    config = MTLMConfig.from_preset("m1-tiny", intermediate_size=48)
    plain = AutoModelForCausalLM.from_config(config)
    fast = AutoModelForCausalLM.from_config(config, fast_path="compile")
    fast.load_state_dict(plain.state_dict())
    assert _graphs_compiled_by(lambda: _train_step(plain)) == 0
    # Without labels: the loss, compiled on the fast path too, cannot account for the graphs.
    assert _graphs_compiled_by(lambda: fast.train()(_batch()["input_ids"])) > 0
    _assert_same_numbers(_train_step(plain), _train_step(fast))


def test_an_old_config_with_a_fast_path_loads_plain_with_a_one_time_warning(tmp_path, caplog):
    MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny")).save_pretrained(tmp_path)
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({**json.loads(config_file.read_text()), "fast_path": "compile"}))
    with caplog.at_level(logging.WARNING):
        loaded = MTLMForCausalLM.from_pretrained(tmp_path)
        MTLMForCausalLM.from_pretrained(tmp_path)
    assert loaded.fast_path is None and not hasattr(loaded.config, "fast_path")
    assert caplog.text.count("the fast path is now chosen at runtime") == 1
    loaded.save_pretrained(tmp_path / "resaved")
    assert "fast_path" not in json.loads((tmp_path / "resaved" / "config.json").read_text())


@pytest.mark.slow  # compiles graphs of its own: 20-50 s on 2 shared cores
def test_fast_path_loads_as_remote_code_and_gives_plain_logits(tmp_path, run_without_mtlm):
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny"))
    _fast_copy(plain).save_pretrained(tmp_path)
    logits, loss, _ = _train_step(plain)
    report = run_without_mtlm(
        f"""
        import json, torch
        from torch._dynamo.utils import counters
        from transformers import AutoModelForCausalLM
        path = {str(tmp_path)!r}
        model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True, fast_path="compile").train()
        assert type(model).__module__.startswith("transformers_modules")
        assert model.fast_path == "compile" and not hasattr(model.config, "fast_path")
        batch = {{k: torch.tensor(v) for k, v in { ({k: v.tolist() for k, v in _batch().items()})!r}.items()}}
        # A fresh process has no graph yet; without labels only the decoder layers can compile.
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        assert counters["stats"]["unique_graphs"] > 0
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


def _reference_liger(calls):
    """liger's functional API written in torch, to test the liger seam on CPU; `calls` counts each kernel's calls."""

    def counted(name, function):
        def call(*args, **kwargs):
            calls[name] += 1
            return function(*args, **kwargs)

        return call

    def rms_norm(x, weight, eps):
        variance = x.float().pow(2).mean(-1, keepdim=True)
        return weight * (x.float() * torch.rsqrt(variance + eps)).to(x.dtype)

    def fused_linear_cross_entropy(x, weight, target, ignore_index=-100, reduction="mean"):
        logits = (x @ weight.t()).float()
        return torch.nn.functional.cross_entropy(logits, target, ignore_index=ignore_index, reduction=reduction)

    return types.SimpleNamespace(
        liger_rms_norm=counted("rms_norm", rms_norm),
        liger_rope=counted("rope", modeling_mtlm.apply_rotary_pos_emb),
        liger_swiglu=counted("swiglu", lambda a, b: torch.nn.functional.silu(a) * b),
        liger_fused_linear_cross_entropy=counted("fused_linear_cross_entropy", fused_linear_cross_entropy),
    )


@pytest.fixture
def reference_liger(monkeypatch):
    """Make this CPU process run the liger seam with `_reference_liger`; returns its call counts."""
    calls = collections.Counter()
    liger = _reference_liger(calls)
    monkeypatch.setattr(modeling_mtlm, "_liger_functional", lambda: liger)  # "liger-kernel is installed"
    monkeypatch.setattr(modeling_mtlm, "_liger_kernels", lambda module, tensor: liger if module.use_liger else None)
    return calls


# The kernels each preset reaches: M2's plain GELU MLP and learned positions have no liger kernel.
LIGER_KERNELS = {
    "m1-tiny": {"rms_norm", "rope", "swiglu", "fused_linear_cross_entropy"},
    "m2-tiny": {"rms_norm", "fused_linear_cross_entropy"},
}


@pytest.mark.parametrize("preset", ["m1-tiny", "m2-tiny"])
def test_liger_fast_path_wiring_gives_plain_loss_and_gradients(preset, reference_liger):
    torch.manual_seed(0)
    plain = MTLMForCausalLM(MTLMConfig.from_preset(preset))
    liger = _fast_copy(plain, "liger")
    expected = _train_step(plain)
    assert sum(reference_liger.values()) == 0  # the plain model never calls the seam
    liger.train().zero_grad()
    out = liger(**_batch())
    assert out.logits is None  # fused linear cross-entropy: no logits in training
    assert set(reference_liger) == LIGER_KERNELS[preset]
    out.loss.backward()
    grads = {name: p.grad for name, p in liger.named_parameters() if p.grad is not None}
    _assert_same_numbers(expected, (expected[0], out.loss.detach(), grads))
    # In eval mode the logits come back.
    with torch.no_grad():
        torch.testing.assert_close(liger.eval()(**_batch()).logits, plain.eval()(**_batch()).logits)


def test_liger_kernels_reach_the_layers_that_depth_growth_adds(reference_liger):
    torch.manual_seed(0)
    liger = MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny"))
    liger.set_fast_path("liger")
    growth_ops.grow_depth(liger, factor=2)
    liger.eval()(_batch()["input_ids"])
    # Two norms a layer and the final one; one RoPE and one SwiGLU a layer.
    assert reference_liger["rms_norm"] == 2 * 4 + 1
    assert reference_liger["rope"] == reference_liger["swiglu"] == 4


@pytest.mark.parametrize("value", ["fast", "", "Compile"])
def test_invalid_fast_path_raises_naming_the_field(value):
    model = MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny"))
    with pytest.raises(ValueError, match="fast_path"):
        model.set_fast_path(value)
    assert model.fast_path is None
    with pytest.raises(ValueError, match="fast_path"):
        AutoModelForCausalLM.from_config(model.config, fast_path=value)


def test_fast_path_is_a_runtime_choice_off_by_default_and_kept_out_of_the_config_and_llama():
    model = MTLMForCausalLM(MTLMConfig.from_preset("m1-tiny"))
    assert model.fast_path is None
    model.set_fast_path("liger")
    assert model.fast_path == model.model.fast_path == "liger"
    assert "fast_path" not in model.config.to_dict()
    with pytest.raises(ValueError, match="chosen at runtime"):
        MTLMConfig.from_preset("m1-tiny", fast_path="liger")
    llama = to_llama(model)
    assert not hasattr(llama.config, "fast_path")
