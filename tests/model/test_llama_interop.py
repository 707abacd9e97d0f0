"""MTLM <-> LlamaForCausalLM: same weights, same logits; Llama exports need no trust_remote_code."""

import pytest
import torch
from transformers import AutoModelForCausalLM, LlamaConfig, LlamaForCausalLM

import mtlm_hf
from mtlm_hf import MTLMConfig, MTLMForCausalLM


def _ids(vocab=99):
    return torch.randint(0, vocab, (3, 13), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"tie_word_embeddings": False, "attention_bias": True, "mlp_bias": True},
        {"num_key_value_heads": 1, "rope_parameters": {"rope_type": "default", "rope_theta": 500000.0}},
    ],
)
def test_mtlm_to_llama_and_back_keeps_logits(overrides):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset("m1-tiny", **overrides)).eval()
    llama = mtlm_hf.to_llama(model)
    assert isinstance(llama, LlamaForCausalLM) and not llama.training
    assert (llama.lm_head.weight is llama.model.embed_tokens.weight) == model.config.tie_word_embeddings
    ids = _ids()
    reference = model(ids).logits
    assert (llama(ids).logits - reference).abs().max() <= 1e-5
    back = mtlm_hf.from_llama(llama)
    assert isinstance(back, MTLMForCausalLM)
    assert (back(ids).logits - reference).abs().max() <= 1e-5


def test_llama_to_mtlm_keeps_logits():
    torch.manual_seed(0)
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=120,
            hidden_size=48,
            intermediate_size=96,
            num_hidden_layers=3,
            num_attention_heads=6,
            num_key_value_heads=2,
            head_dim=16,
            max_position_embeddings=64,
        )
    ).eval()
    model = mtlm_hf.from_llama(llama)
    ids = _ids(120)
    assert (model(ids).logits - llama(ids).logits).abs().max() <= 1e-5
    assert model.config.head_dim == 16 and model.config.num_key_value_heads == 2


def test_to_llama_keeps_bfloat16():
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset("m1-tiny")).to(torch.bfloat16)
    assert next(mtlm_hf.to_llama(model).parameters()).dtype == torch.bfloat16


@pytest.mark.parametrize(
    "preset, overrides, named",
    [
        ("m2-tiny", {}, "position_embedding_type"),
        ("m1-tiny", {"mlp_type": "plain"}, "mlp_type"),
        ("m1-tiny", {"hidden_dropout": 0.1}, "hidden_dropout"),
        ("m1-tiny", {"layer_types": ["sliding_attention", "full_attention"], "sliding_window": 8}, "sliding"),
    ],
)
def test_to_llama_refuses_what_llama_cannot_express(preset, overrides, named):
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset(preset, **overrides))
    with pytest.raises(ValueError, match=named):
        mtlm_hf.to_llama(model)


def test_from_llama_refuses_other_models():
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset("m1-tiny"))
    with pytest.raises(ValueError, match="Llama"):
        mtlm_hf.from_llama(model)


def test_llama_export_loads_without_trust_remote_code(tmp_path, run_without_mtlm):
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(MTLMConfig.from_preset("m1-tiny")).eval()
    mtlm_hf.to_llama(model).save_pretrained(tmp_path / "llama")
    ids = _ids()
    remote = run_without_mtlm(
        f"""
        import json, torch
        from transformers import AutoModelForCausalLM
        model = AutoModelForCausalLM.from_pretrained({str(tmp_path / "llama")!r}).eval()
        with torch.no_grad():
            logits = model(torch.tensor({ids.tolist()})).logits
        print(json.dumps({{"class": type(model).__name__, "logits": logits.tolist()}}))
        """
    )
    assert remote["class"] == "LlamaForCausalLM"
    assert (torch.tensor(remote["logits"]) - model(ids).logits).abs().max() <= 1e-5
