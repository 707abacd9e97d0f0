"""Importing an original M1 checkpoint gives the original model's logits.

The oracle is a compact re-implementation of the original forward pass (MadrasLe/MTLM1 `lhama.py`, as
described in ORIGINALS.md): fused qkv, RoPE on interleaved pairs, MLP `w3(silu(w1 x) * w2 x)`, tied head.
"""

import math

import pytest
import torch
import torch.nn.functional as F

from mtlm_hf import MTLMForCausalLM, import_original_m1

VOCAB, HIDDEN, INTERMEDIATE, LAYERS, HEADS = 101, 64, 176, 3, 4


def original_state_dict(hidden=HIDDEN, layers=LAYERS, seed=0) -> dict[str, torch.Tensor]:
    """Random weights under the original's names; the head shares the embedding's storage, as in `lhama.py`."""
    generator = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=generator) * 0.02

    def norm():  # not all ones, so a misplaced norm weight shows
        return 1 + 0.1 * torch.randn(hidden, generator=generator)

    state = {"tok_emb.weight": normal(VOCAB, hidden)}
    for i in range(layers):
        state |= {
            f"layers.{i}.norm1.weight": norm(),
            f"layers.{i}.attn.qkv.weight": normal(3 * hidden, hidden),
            f"layers.{i}.attn.o_proj.weight": normal(hidden, hidden),
            f"layers.{i}.norm2.weight": norm(),
            f"layers.{i}.mlp.w1.weight": normal(INTERMEDIATE, hidden),
            f"layers.{i}.mlp.w2.weight": normal(INTERMEDIATE, hidden),
            f"layers.{i}.mlp.w3.weight": normal(hidden, INTERMEDIATE),
        }
    state |= {"norm_f.weight": norm(), "lm_head.weight": state["tok_emb.weight"]}
    return state


def original_logits(state: dict[str, torch.Tensor], input_ids: torch.Tensor, num_heads: int) -> torch.Tensor:
    """The original M1 forward pass, in eval mode."""

    def rms_norm(x, weight):
        return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + 1e-6) * weight

    batch, length = input_ids.shape
    hidden = state["tok_emb.weight"].shape[1]
    head_dim = hidden // num_heads
    # Pair j = dimensions (2j, 2j+1) of a head, read as one complex number and turned by position * base^(-2j/D).
    inverse_frequencies = 10000.0 ** (-torch.arange(0, head_dim, 2, dtype=torch.float64) / head_dim)
    angles = torch.outer(torch.arange(length, dtype=torch.float64), inverse_frequencies)
    rotations = torch.polar(torch.ones_like(angles), angles).to(torch.complex64)  # (seq, head_dim / 2)

    def rope(x):  # (batch, heads, seq, head_dim)
        pairs = torch.view_as_complex(x.reshape(*x.shape[:-1], head_dim // 2, 2).contiguous())
        return torch.view_as_real(pairs * rotations).flatten(-2)

    causal = torch.ones(length, length, dtype=torch.bool).tril()
    x = F.embedding(input_ids, state["tok_emb.weight"])
    layer = 0
    while f"layers.{layer}.norm1.weight" in state:
        p = f"layers.{layer}."
        h = rms_norm(x, state[p + "norm1.weight"])
        q, k, v = (
            t.view(batch, length, num_heads, head_dim).transpose(1, 2)
            for t in (h @ state[p + "attn.qkv.weight"].T).chunk(3, dim=-1)
        )
        scores = (rope(q) @ rope(k).transpose(-1, -2) / math.sqrt(head_dim)).masked_fill(~causal, float("-inf"))
        attention = (scores.softmax(-1) @ v).transpose(1, 2).reshape(batch, length, hidden)
        x = x + attention @ state[p + "attn.o_proj.weight"].T
        h = rms_norm(x, state[p + "norm2.weight"])
        gated = F.silu(h @ state[p + "mlp.w1.weight"].T) * (h @ state[p + "mlp.w2.weight"].T)
        x = x + gated @ state[p + "mlp.w3.weight"].T
        layer += 1
    return rms_norm(x, state["norm_f.weight"]) @ state["tok_emb.weight"].T


def random_ids(batch=3, length=17):
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(1))


def assert_same_logits(model, state, num_heads=HEADS):
    ids = random_ids()
    with torch.no_grad():
        difference = (model(ids).logits - original_logits(state, ids, num_heads)).abs().max()
    assert difference <= 1e-5


def trainer_checkpoint(state: dict[str, torch.Tensor]) -> dict:
    """What the original trainer saved: model, AdamW state after a real step, and the step number."""
    parameters = [torch.nn.Parameter(tensor.clone()) for key, tensor in state.items() if key != "lm_head.weight"]
    optimizer = torch.optim.AdamW(parameters, lr=7e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.01)
    sum(parameter.square().sum() for parameter in parameters).backward()
    optimizer.step()
    return {"model": state, "optimizer": optimizer.state_dict(), "step": 7}


@pytest.mark.parametrize("wrapped", [False, True], ids=["state_dict", "trainer_checkpoint"])
def test_imported_file_gives_original_logits(tmp_path, wrapped):
    state = original_state_dict()
    path = tmp_path / "global_step_7.pt"
    torch.save(trainer_checkpoint(state) if wrapped else state, path)

    model = import_original_m1(path, num_attention_heads=HEADS)

    assert isinstance(model, MTLMForCausalLM) and not model.training
    config = model.config
    assert (config.vocab_size, config.hidden_size, config.intermediate_size) == (VOCAB, HIDDEN, INTERMEDIATE)
    assert (config.num_hidden_layers, config.num_attention_heads, config.num_key_value_heads) == (LAYERS, HEADS, 4)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    assert_same_logits(model, state)


def test_default_head_count_is_twelve():
    state = original_state_dict(hidden=96, layers=2)
    model = import_original_m1(state)
    assert model.config.num_attention_heads == 12
    assert_same_logits(model, state, num_heads=12)


def test_wrong_head_count_changes_logits():
    """The head count shapes the RoPE permutation: the oracle disagrees when it is wrong."""
    state = original_state_dict()
    ids = random_ids()
    with torch.no_grad():
        logits = import_original_m1(state, num_attention_heads=2)(ids).logits
    assert (logits - original_logits(state, ids, HEADS)).abs().max() > 1e-3


def test_compile_and_ddp_prefixes_are_stripped_and_lm_head_may_be_absent():
    state = original_state_dict()
    prefixed = {f"module._orig_mod.{key}": value for key, value in state.items() if key != "lm_head.weight"}
    assert_same_logits(import_original_m1(prefixed, num_attention_heads=HEADS), state)


def test_config_overrides_apply_and_contradictions_are_refused():
    state = original_state_dict()
    model = import_original_m1(state, num_attention_heads=HEADS, embedding_dropout=0.05, max_position_embeddings=64)
    assert (model.config.embedding_dropout, model.config.max_position_embeddings) == (0.05, 64)
    with pytest.raises(ValueError, match=r"hidden_size=128 \(the checkpoint has 64\)"):
        import_original_m1(state, num_attention_heads=HEADS, hidden_size=128)


def test_keeps_the_checkpoint_dtype():
    state = {key: value.to(torch.bfloat16) for key, value in original_state_dict().items()}
    model = import_original_m1(state, num_attention_heads=HEADS)
    assert {parameter.dtype for parameter in model.parameters()} == {torch.bfloat16}
    assert torch.equal(model.model.norm.weight, state["norm_f.weight"])


def test_bad_keys_are_named_with_their_expected_shapes():
    state = original_state_dict()
    del state["layers.1.attn.o_proj.weight"]
    state["layers.2.mlp.w3.weight"] = torch.zeros(HIDDEN, 100)
    state["layers.0.attn.rope.freqs"] = torch.zeros(8)
    with pytest.raises(ValueError) as error:
        import_original_m1(state, num_attention_heads=HEADS)
    message = str(error.value)
    assert "missing: layers.1.attn.o_proj.weight (expected shape [64, 64])" in message
    assert "unexpected: layers.0.attn.rope.freqs" in message
    assert "mis-shaped: layers.2.mlp.w3.weight (shape [64, 100], expected [64, 176])" in message


def test_a_missing_last_layer_tensor_and_a_missing_embedding_are_named():
    state = original_state_dict()
    del state["layers.2.norm2.weight"]
    with pytest.raises(ValueError, match=r"missing: layers\.2\.norm2\.weight \(expected shape \[64\]\)"):
        import_original_m1(state, num_attention_heads=HEADS)
    del state["tok_emb.weight"], state["lm_head.weight"]
    with pytest.raises(ValueError, match="`tok_emb.weight` must be a 2-D tensor, but it is absent"):
        import_original_m1(state, num_attention_heads=HEADS)


def test_untied_head_and_impossible_head_count_are_refused():
    state = original_state_dict()
    with pytest.raises(ValueError, match="heads of even size"):
        import_original_m1(state, num_attention_heads=5)
    state["lm_head.weight"] = state["lm_head.weight"] + 1
    with pytest.raises(ValueError, match="`lm_head.weight` differs from `tok_emb.weight`"):
        import_original_m1(state, num_attention_heads=HEADS)


def test_a_file_that_is_not_a_dict_is_refused(tmp_path):
    path = tmp_path / "global_step_7.pt"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(TypeError, match="got list"):
        import_original_m1(path)
