"""The practical matmul ceiling: the rate of one large square matrix product on random data.

MFU is quoted against a datasheet peak (989 dense bf16 TFLOP/s on an H200); the rate a plain
`torch.matmul` reaches on the same machine says how much of that peak is reachable at all.
"""

import argparse
import json
import time
from pathlib import Path

import torch


def measure(size: int, device: str, dtype: torch.dtype, warmup: int = 3, repeats: int = 10) -> float:
    """Median TFLOP/s of `repeats` products of two random `size` x `size` matrices, after `warmup` untimed ones."""
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    b = torch.randn(size, size, device=device, dtype=dtype, generator=generator)
    for _ in range(warmup):
        torch.matmul(a, b)
    seconds = []
    for _ in range(repeats):
        if device == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            torch.matmul(a, b)
            end.record()
            torch.cuda.synchronize()
            seconds.append(start.elapsed_time(end) / 1000)
        else:
            began = time.perf_counter()
            torch.matmul(a, b)
            seconds.append(time.perf_counter() - began)
    seconds.sort()
    return 2 * size**3 / seconds[len(seconds) // 2] / 1e12


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=int, default=8192)
    parser.add_argument("--device", default="cuda", choices=["cpu", "cuda"])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    tflops = measure(args.size, args.device, dtype)
    report = {"size": args.size, "dtype": str(dtype).removeprefix("torch."), "device": args.device, "tflops": tflops}
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"{args.size}^3 {report['dtype']} matmul on {args.device}: {tflops:.1f} TFLOP/s")
