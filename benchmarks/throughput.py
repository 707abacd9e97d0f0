"""Training throughput of LlamaForCausalLM, MTLM and MTLM's fast path: tokens/s and MFU.

One process times train steps (forward, backward, AdamW step) at sequence 1024 on the m1-base (16
layers) and m1 (32 layers) shapes, in fp32 and in bf16 autocast. Warmup steps (where the fast path
compiles) are not timed; the timed rounds are interleaved (llama, mtlm, mtlm-fast, llama, ...) so
that a change of machine load hits all contenders alike. Results go into `benchmarks/throughput.json`
under the device kind ("cpu" / "cuda"), keeping the other kind's entry.

    python benchmarks/throughput.py                    # CPU, both shapes and precisions (~10 min on 2 cores)
    python benchmarks/throughput.py --quick            # sanity run: m1-base only, fewer steps
    python benchmarks/throughput.py --device cuda --precision bf16 --batch-size 8   # GPU; peak from the name

MFU = flops_per_token * tokens/s / peak, with flops_per_token = 6 * N + 12 * layers * hidden * seq
(N: parameters that enter a matmul; the second term is attention's scores and weighted sum, forward
and backward, as in PaLM's appendix B). On CPU there is no reliable peak, so MFU is null unless
`--peak-tflops` is given; achieved TFLOP/s is always reported.
"""

import argparse
import copy
import dataclasses
import json
import os
import statistics
import time
from contextlib import nullcontext
from pathlib import Path

import torch
import transformers
from machine import host
from transformers.utils import is_liger_kernel_available

from mtlm_hf import MTLMConfig, MTLMForCausalLM, to_llama


@dataclasses.dataclass
class BenchConfig:
    shapes: tuple[str, ...] = ("m1-base", "m1")  # MTLM presets
    precisions: tuple[str, ...] = ("fp32", "bf16")  # bf16 = torch.autocast(bfloat16) over fp32 weights
    seq_len: int = 1024  # tokens per sequence
    batch_size: int = 1  # sequences per step
    # Few steps, so that the default CPU run fits ~10 minutes on 2 free cores (a CPU step of m1 takes 5-12 s).
    warmup_steps: int = 2  # untimed steps per contender and precision (compilation happens here)
    timed_steps: int = 5  # timed steps per contender and precision
    device: str = "cpu"
    # `model.set_fast_path` of each fast contender; None: "liger" on CUDA, "compile" elsewhere. One fast path is the
    # contender "mtlm-fast"; several are "mtlm-compile", "mtlm-liger".
    fast_paths: tuple[str, ...] | None = None
    peak_tflops: float | None = None  # dense peak at the precision; None: known GPUs only
    seed: int = 0
    out: str = "benchmarks/throughput.json"


# Dense peak TFLOP/s by GPU name and precision (fp32 without TF32 tensor cores).
GPU_PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0}}
GPU_PEAK_TFLOPS["A100"] = {"bf16": 312.0, "fp32": 19.5}


def get_batch(cfg: BenchConfig, vocab_size: int) -> torch.Tensor:
    generator = torch.Generator().manual_seed(cfg.seed)
    return torch.randint(0, vocab_size, (cfg.batch_size, cfg.seq_len), generator=generator).to(cfg.device)


def build_contenders(cfg: BenchConfig, shape: str) -> dict[str, torch.nn.Module]:
    torch.manual_seed(cfg.seed)
    config = MTLMConfig.from_preset(shape, max_position_embeddings=max(1024, cfg.seq_len), use_cache=False)
    config._attn_implementation = "sdpa"
    mtlm = MTLMForCausalLM(config).to(cfg.device).train()
    llama = to_llama(mtlm).train()  # same shape and weights, sdpa, tied embeddings
    contenders = {"llama": llama, "mtlm": mtlm}
    for fast_path in cfg.fast_paths:
        fast = copy.deepcopy(mtlm)
        fast.set_fast_path(fast_path)
        contenders["mtlm-fast" if len(cfg.fast_paths) == 1 else f"mtlm-{fast_path}"] = fast
    return contenders


def matmul_params(model: torch.nn.Module) -> int:
    """Parameters that enter a matmul: all but the input embedding, whose tied copy is the lm_head."""
    embedding = model.get_input_embeddings().weight
    unique = {id(p): p for p in model.parameters() if p is not embedding}
    return sum(p.numel() for p in unique.values()) + model.get_output_embeddings().weight.numel() * (
        model.get_output_embeddings().weight is embedding
    )


def train_step(model, optimizer, batch, precision: str, device: str) -> float:
    autocast = torch.autocast(device, dtype=torch.bfloat16) if precision == "bf16" else nullcontext()
    start = time.perf_counter()
    with autocast:
        loss = model(input_ids=batch, labels=batch, use_cache=False).loss
    loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def peak_flops(cfg: BenchConfig, precision: str) -> tuple[float | None, str]:
    if cfg.peak_tflops is not None:
        return cfg.peak_tflops * 1e12, "--peak-tflops"
    if cfg.device == "cuda":
        name = torch.cuda.get_device_name()
        for key, peaks in GPU_PEAK_TFLOPS.items():
            if key in name:
                return peaks[precision] * 1e12, f"{key} dense {precision} datasheet peak"
        return None, f"unknown GPU {name!r}: pass --peak-tflops"
    return None, (
        "no reliable peak for a shared virtual CPU: pass --peak-tflops to get MFU "
        "(e.g. 2 AVX-512 cores x 2 FMA units x 16 fp32 lanes x 2 FLOP x 2.3 GHz = 0.29 TFLOP/s fp32)"
    )


def bench_shape(cfg: BenchConfig, shape: str) -> dict:
    contenders = build_contenders(cfg, shape)
    mtlm = contenders["mtlm"]
    n_params = matmul_params(mtlm)
    c = mtlm.config
    flops_per_token = 6 * n_params + 12 * c.num_hidden_layers * c.hidden_size * cfg.seq_len
    optimizers = {name: torch.optim.AdamW(m.parameters(), lr=1e-5) for name, m in contenders.items()}
    batch = get_batch(cfg, c.vocab_size)
    tokens = cfg.batch_size * cfg.seq_len
    result = {"num_hidden_layers": c.num_hidden_layers, "matmul_params": n_params, "flops_per_token": flops_per_token}
    for precision in cfg.precisions:
        warmup_seconds = {}
        for name, model in contenders.items():
            start = time.perf_counter()
            for _ in range(cfg.warmup_steps):
                train_step(model, optimizers[name], batch, precision, cfg.device)
            warmup_seconds[name] = round(time.perf_counter() - start, 1)
            print(f"{shape} {precision} {name}: warmup {warmup_seconds[name]}s", flush=True)
        times = {name: [] for name in contenders}
        for _ in range(cfg.timed_steps):
            for name, model in contenders.items():
                times[name].append(train_step(model, optimizers[name], batch, precision, cfg.device))
        peak, peak_source = peak_flops(cfg, precision)
        rows = {}
        for name, seconds in times.items():
            tokens_per_s = tokens / statistics.median(seconds)
            rows[name] = {
                "tokens_per_s": round(tokens_per_s, 1),
                "step_seconds": [round(s, 3) for s in seconds],
                "warmup_seconds": warmup_seconds[name],
                "achieved_tflops": round(flops_per_token * tokens_per_s / 1e12, 4),
                "mfu": None if peak is None else round(flops_per_token * tokens_per_s / peak, 4),
            }
        for row in rows.values():
            row["vs_llama"] = round(row["tokens_per_s"] / rows["llama"]["tokens_per_s"], 3)
        result[precision] = {"peak_source": peak_source, **rows}
        print(shape, precision, json.dumps({k: (v["tokens_per_s"], v["vs_llama"]) for k, v in rows.items()}))
    del contenders, optimizers
    return result


def machine(cfg: BenchConfig) -> dict:
    info = {**host(), "torch": torch.__version__, "transformers": transformers.__version__}
    info["threads"] = torch.get_num_threads()
    if cfg.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name()
    return info


def main(cfg: BenchConfig) -> None:
    fast_paths = cfg.fast_paths or ("liger" if cfg.device == "cuda" else "compile",)
    cfg = dataclasses.replace(cfg, fast_paths=tuple(fast_paths))
    uses_liger = "liger" in fast_paths and cfg.device == "cuda" and is_liger_kernel_available()
    run = {
        "machine": machine(cfg),
        "load_average_start": os.getloadavg(),
        "settings": dataclasses.asdict(cfg),
        "fast_path": {
            "config": fast_paths[0] if len(fast_paths) == 1 else list(fast_paths),
            "liger_kernel_used": uses_liger,
            "note": "liger-kernel's Triton kernels run on CUDA only; elsewhere 'liger' is 'compile'.",
        },
        "mfu_formula": "mfu = (6 * N + 12 * num_hidden_layers * hidden_size * seq_len) * tokens_per_s / peak_flops, "
        "N = parameters entering a matmul (tied embedding counted once, as the lm_head)",
        "timing": f"median of {cfg.timed_steps} timed steps after {cfg.warmup_steps} warmup step(s) per contender "
        "and precision (few, to keep the CPU run short); each step = forward + backward + AdamW step, "
        "use_cache=False; contenders interleaved step by step. warmup_seconds includes the fast path's "
        "compilation, shorter when inductor's on-disk cache already holds the graphs",
        "results": {},
    }
    start = time.perf_counter()
    for shape in cfg.shapes:
        run["results"][shape] = bench_shape(cfg, shape)
    run["wall_seconds"] = round(time.perf_counter() - start, 1)
    run["load_average_end"] = os.getloadavg()

    out = Path(cfg.out)
    report = json.loads(out.read_text()) if out.exists() else {}
    report.setdefault("cuda", "not measured")
    report["cuda" if cfg.device == "cuda" else "cpu"] = run
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--shapes", nargs="+", default=list(BenchConfig.shapes))
    parser.add_argument("--precision", nargs="+", default=list(BenchConfig.precisions), choices=["fp32", "bf16"])
    parser.add_argument("--seq-len", type=int, default=BenchConfig.seq_len)
    parser.add_argument("--batch-size", type=int, default=BenchConfig.batch_size)
    parser.add_argument("--warmup-steps", type=int, default=BenchConfig.warmup_steps)
    parser.add_argument("--timed-steps", type=int, default=BenchConfig.timed_steps)
    parser.add_argument("--device", default=BenchConfig.device, choices=["cpu", "cuda"])
    parser.add_argument("--fast-path", nargs="+", default=None, choices=["compile", "liger"])
    parser.add_argument("--peak-tflops", type=float, default=None)
    parser.add_argument("--quick", action="store_true", help="m1-base only, 1 warmup and 2 timed steps")
    parser.add_argument("--out", default=BenchConfig.out)
    args = parser.parse_args()
    config = BenchConfig(
        shapes=("m1-base",) if args.quick else tuple(args.shapes),
        precisions=tuple(args.precision),
        seq_len=args.seq_len,
        batch_size=args.batch_size,
        warmup_steps=1 if args.quick else args.warmup_steps,
        timed_steps=2 if args.quick else args.timed_steps,
        device=args.device,
        fast_paths=tuple(args.fast_path) if args.fast_path else None,
        peak_tflops=args.peak_tflops,
        out=args.out,
    )
    main(config)
