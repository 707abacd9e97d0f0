"""MTLM on a CUDA GPU: bf16 attention backends, cached decoding, the fast paths, growth keeping device and dtype.

Marked `cuda` and skipped where no GPU is present; benchmarks/gpu/run.sh runs them on a lent GPU.
"""

import pytest
import torch
from transformers import AutoModelForCausalLM
from transformers.utils import is_liger_kernel_available

from growth_ops import GrowthSpec, grow
from mtlm_hf import MTLMConfig

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (benchmarks/gpu/run.sh on a lent one)"),
]

BF16_RTOL = 2e-2  # relative norm error of bf16 logits between two correct implementations


def build(attn_implementation: str = "sdpa", dtype: torch.dtype = torch.bfloat16, **overrides) -> torch.nn.Module:
    torch.manual_seed(0)
    config = MTLMConfig.from_preset("m1-tiny", **overrides)
    config._attn_implementation = attn_implementation
    return AutoModelForCausalLM.from_config(config).to("cuda", dtype)


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a.float() - b.float()).norm() / b.float().norm()).item()


def tokens(model: torch.nn.Module, batch: int = 2, length: int = 48) -> torch.Tensor:
    generator = torch.Generator().manual_seed(1)
    return torch.randint(0, model.config.vocab_size, (batch, length), generator=generator).cuda()


def test_bf16_eager_and_sdpa_logits_agree_on_cuda():
    sdpa = build("sdpa")
    eager = build("eager")
    eager.load_state_dict(sdpa.state_dict())
    ids = tokens(sdpa)
    with torch.no_grad():
        assert relative_error(eager(ids).logits, sdpa(ids).logits) < BF16_RTOL


def test_cached_and_uncached_greedy_generation_agree_on_cuda():
    model = build(dtype=torch.float32).eval()
    prompt = tokens(model, batch=1, length=8)
    cached = model.generate(prompt, max_new_tokens=24, do_sample=False, use_cache=True)
    uncached = model.generate(prompt, max_new_tokens=24, do_sample=False, use_cache=False)
    assert torch.equal(cached, uncached)


@pytest.mark.parametrize("fast_path", ["compile", "liger"])
def test_fast_path_loss_and_gradients_match_the_plain_path_on_cuda(fast_path):
    if fast_path == "liger" and not is_liger_kernel_available():
        pytest.skip("liger-kernel is not installed (the gpu extra; benchmarks/gpu/fetch_wheels.sh carries it)")
    plain = build()
    fast = build()
    fast.load_state_dict(plain.state_dict())
    fast.set_fast_path(fast_path)
    ids = tokens(plain)
    plain_loss = plain(ids, labels=ids).loss
    fast_loss = fast(ids, labels=ids).loss
    plain_loss.backward()
    fast_loss.backward()
    assert abs(fast_loss.item() - plain_loss.item()) < BF16_RTOL * plain_loss.item()
    for (name, p), q in zip(plain.named_parameters(), fast.parameters(), strict=True):
        assert relative_error(q.grad, p.grad) < 5 * BF16_RTOL, name


def test_growth_on_cuda_keeps_device_and_dtype():
    model = build()
    grow(model, GrowthSpec(depth=2))
    assert model.config.num_hidden_layers == 2 * MTLMConfig.from_preset("m1-tiny").num_hidden_layers
    assert {(p.device.type, p.dtype) for p in model.parameters()} == {("cuda", torch.bfloat16)}
    ids = tokens(model)
    with torch.no_grad():
        assert torch.isfinite(model(ids).logits).all()
