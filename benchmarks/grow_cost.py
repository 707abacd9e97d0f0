"""What it costs to double a ~1B-parameter Llama-shaped model in memory: `grow_depth` against a naive copy.

    python benchmarks/grow_cost.py            # writes benchmarks/grow_cost.json beside this file

The model has TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads / 4 KV heads, MLP 5632,
vocab 32000), random weights in bfloat16 on the CPU, so the whole run fits in about 5 GB of RAM.
Both contenders grow 22 -> 44 layers:

- `grow_depth`: `growth_ops.grow_depth(model, factor=2)`, which also checks the grown structure on
  the meta device, renumbers `layer_idx`, and mends the config;
- `naive`: `copy.deepcopy` of every layer appended to `model.model.layers`, and the layer count
  set (what most hand-written growth code does; it leaves duplicated `layer_idx` behind).

Each run happens in a fresh process, so one run's freed memory cannot serve the next. Memory is the
process's resident set size (RSS), sampled every millisecond by a thread while the growth runs:
"peak extra" is the highest sample minus the RSS just before, "retained" the RSS just after minus
that. RSS is used because torch's CPU tensors are invisible to `tracemalloc`; for comparison,
"new layer bytes" is the exact size of the 22 added layers, the least any growth must allocate.
"""

import copy
import gc
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import torch
import transformers
from machine import host
from transformers import AutoModelForCausalLM, LlamaConfig

from growth_ops import grow_depth


@dataclass
class BenchConfig:
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 22
    num_attention_heads: int = 32
    num_key_value_heads: int = 4
    vocab_size: int = 32000
    dtype: str = "bfloat16"
    factor: int = 2
    repeats: int = 3  # fresh processes per contender
    sample_interval_s: float = 0.001  # RSS sampling period


def build_model(cfg: BenchConfig) -> torch.nn.Module:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
    )
    return AutoModelForCausalLM.from_config(config, dtype=getattr(torch, cfg.dtype))


def naive_grow(model: torch.nn.Module, factor: int) -> None:
    layers = model.model.layers
    for i in range(len(layers) * (factor - 1)):
        layers.append(copy.deepcopy(layers[i % model.config.num_hidden_layers]))
    model.config.num_hidden_layers = len(layers)


def growth_ops_grow(model: torch.nn.Module, factor: int) -> None:
    grow_depth(model, factor=factor)


def measure(fn, *args) -> dict:
    """Seconds and RSS of one call, with a sampling thread for the peak."""
    process = psutil.Process()
    gc.collect()
    baseline = process.memory_info().rss
    peak, done = [baseline], threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], process.memory_info().rss)
            time.sleep(BenchConfig.sample_interval_s)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    start = time.perf_counter()
    fn(*args)
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    gc.collect()
    after = process.memory_info().rss
    peak[0] = max(peak[0], after)
    return {"seconds": seconds, "peak_extra_bytes": peak[0] - baseline, "retained_bytes": after - baseline}


def worker(contender: str, cfg: BenchConfig) -> dict:
    model = build_model(cfg)
    num_params = sum(p.numel() for p in model.parameters())
    layer_bytes = sum(p.numel() * p.element_size() for p in model.model.layers.parameters())
    grow = {"grow_depth": growth_ops_grow, "naive": naive_grow}[contender]
    load_before = os.getloadavg()[0]  # the machine may be shared: say how busy it was
    result = measure(grow, model, cfg.factor)
    assert len(model.model.layers) == cfg.num_hidden_layers * cfg.factor
    result.update(
        contender=contender,
        params_before=num_params,
        params_after=sum(p.numel() for p in model.parameters()),
        new_layer_bytes=layer_bytes * (cfg.factor - 1),
        load_average_1min=load_before,
    )
    return result


def machine() -> dict:
    return {
        **host(),
        "ram_bytes": psutil.virtual_memory().total,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "torch_threads": torch.get_num_threads(),
    }


def main() -> None:
    cfg = BenchConfig()
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], cfg)))
        return
    runs = []
    for _ in range(cfg.repeats):
        for contender in ("naive", "grow_depth"):
            out = subprocess.run(
                [sys.executable, __file__, "--worker", contender], capture_output=True, text=True, check=True
            )
            runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(
                f"{contender:10s} {runs[-1]['seconds']:.2f} s, peak extra {runs[-1]['peak_extra_bytes'] / 2**30:.2f} GiB"
            )
    summary = {}
    for contender in ("naive", "grow_depth"):
        mine = [r for r in runs if r["contender"] == contender]
        summary[contender] = {
            "median_seconds": statistics.median(r["seconds"] for r in mine),
            "median_peak_extra_gib": statistics.median(r["peak_extra_bytes"] for r in mine) / 2**30,
            "median_retained_gib": statistics.median(r["retained_bytes"] for r in mine) / 2**30,
        }
    summary["new_layer_gib"] = runs[0]["new_layer_bytes"] / 2**30
    report = {
        "what": "double a Llama-shaped model in memory (22 -> 44 layers): growth_ops.grow_depth vs copy.deepcopy per layer",
        "memory_method": "process RSS sampled every 1 ms by a thread during the call; peak minus RSS just before",
        "config": asdict(cfg),
        "machine": machine(),
        "summary": summary,
        "runs": runs,
    }
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
