"""Training-step throughput of the same M2-shaped model in JAX/Flax (mtlm_recipes/m2_jax) and in PyTorch (MTLM).

    python benchmarks/jax_vs_torch.py            # writes benchmarks/jax_vs_torch.json beside this file

Both sides train the `m2` preset (41.5M parameters: hidden 384, 12 layers, 6 heads, GELU MLP 1024, learned
positions, untied head, vocab 32000) in float32 on the same random token batches, with the original M2's update:
clip to global norm 1.0, then AdamW (weight decay 0.01 on every parameter). One step is forward, backward,
clipping and the optimizer update; the loss is read back after each step, so every timed step is complete.

- `jax`: the M2 trainer's own jitted train step (`steps.make_train_step`), on a mesh of every JAX device;
- `torch`: `MTLMForCausalLM` (sdpa attention, eager, no `torch.compile`) with `torch.optim.AdamW` and
  `clip_grad_norm_`, what the M1 trainer runs.

Each side runs in a fresh process, one after the other: `warmup_steps` untimed steps (JAX compiles in the first),
then `timed_steps` timed ones; tokens/s is tokens per step over the median step time. Dropout is off (the preset's
default) so that both sides do the same arithmetic. The machine may be shared: the load average is recorded.
"""

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from machine import host


@dataclass
class BenchConfig:
    preset: str = "m2"
    batch_size: int = 4  # sequences per step
    seq_len: int = 512  # tokens per sequence (the original trained on 1024; halved to keep a step short on 2 cores)
    warmup_steps: int = 2
    timed_steps: int = 5
    lr: float = 4e-4
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    seed: int = 0


def batches(cfg: BenchConfig, vocab_size: int) -> list[np.ndarray]:
    rng = np.random.default_rng(cfg.seed)
    steps = cfg.warmup_steps + cfg.timed_steps
    return [rng.integers(3, vocab_size, (cfg.batch_size, cfg.seq_len), dtype=np.int32) for _ in range(steps)]


def run_jax(cfg: BenchConfig) -> dict:
    import jax  # each side imports only its own framework
    from flax import nnx

    import mtlm_hf
    from mtlm_recipes.m2_jax.config import OptimizerConfig
    from mtlm_recipes.m2_jax.mesh import batch_sharding, make_mesh, state_shardings
    from mtlm_recipes.m2_jax.steps import create_model_and_optimizer, make_train_step

    config = mtlm_hf.MTLMConfig.from_preset(cfg.preset)
    steps = cfg.warmup_steps + cfg.timed_steps
    opt = OptimizerConfig(total_steps=steps + 1, lr=cfg.lr, warmup_steps=0, weight_decay=cfg.weight_decay)
    model, optimizer = create_model_and_optimizer(config, opt, cfg.seed)
    num_parameters = sum(leaf.size for leaf in jax.tree.leaves(nnx.state(model, nnx.Param)))
    mesh = make_mesh()
    graphdef, state = nnx.split((model, optimizer))
    sharding = state_shardings(state, mesh, shard_params=False)
    state = jax.device_put(state, sharding)
    train_step = make_train_step(graphdef, sharding, batch_sharding(mesh), ignored_id=2, dropout_seed=cfg.seed)
    times, losses = [], []
    for batch in batches(cfg, config.vocab_size):
        started = time.perf_counter()
        state, loss = train_step(state, jax.device_put(batch, batch_sharding(mesh)))
        losses.append(float(loss))
        times.append(time.perf_counter() - started)
    return {
        "framework": "jax",
        "versions": {name: __import__(name).__version__ for name in ("jax", "jaxlib", "flax", "optax")},
        "devices": [str(device) for device in jax.devices()],
        "parameters": int(num_parameters),
        "step_seconds": times,
        "losses": losses,
    }


def run_torch(cfg: BenchConfig) -> dict:
    import torch

    import mtlm_hf

    torch.manual_seed(cfg.seed)
    model = mtlm_hf.MTLMForCausalLM(mtlm_hf.MTLMConfig.from_preset(cfg.preset)).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    times, losses = [], []
    for batch in batches(cfg, model.config.vocab_size):
        started = time.perf_counter()
        ids = torch.from_numpy(batch).long()
        loss = model(ids, labels=ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(loss.item())
        times.append(time.perf_counter() - started)
    return {
        "framework": "torch",
        "versions": {"torch": torch.__version__},
        "torch_threads": torch.get_num_threads(),
        "attn_implementation": model.config._attn_implementation,
        "parameters": sum(p.numel() for p in model.parameters()),
        "step_seconds": times,
        "losses": losses,
    }


def machine() -> dict:
    return {
        **host(),
        "accelerator": "none (CPU only)",
    }


def main() -> None:
    cfg = BenchConfig()
    if len(sys.argv) == 3 and sys.argv[1] == "--worker":
        result = {"jax": run_jax, "torch": run_torch}[sys.argv[2]](cfg)
        print(json.dumps(result))
        return
    tokens_per_step = cfg.batch_size * cfg.seq_len
    results = {}
    for framework in ("torch", "jax"):
        load_before = os.getloadavg()[0]
        out = subprocess.run(
            [sys.executable, __file__, "--worker", framework], capture_output=True, text=True, check=True
        )
        result = json.loads(out.stdout.strip().splitlines()[-1])
        timed = result["step_seconds"][cfg.warmup_steps :]
        result.update(
            load_average_1min_before=load_before,
            load_average_1min_after=os.getloadavg()[0],
            median_step_seconds=statistics.median(timed),
            tokens_per_second=tokens_per_step / statistics.median(timed),
        )
        results[framework] = result
        print(
            f"{framework:6s} {result['tokens_per_second']:,.0f} tokens/s (median step {result['median_step_seconds']:.2f} s)"
        )
    report = {
        "what": "tokens/s of one training step (forward, backward, clip 1.0, AdamW) of the m2 preset, JAX vs PyTorch",
        "config": asdict(cfg),
        "tokens_per_step": tokens_per_step,
        "machine": machine(),
        "summary": {
            "torch_tokens_per_second": results["torch"]["tokens_per_second"],
            "jax_tokens_per_second": results["jax"]["tokens_per_second"],
            "jax_over_torch": results["jax"]["tokens_per_second"] / results["torch"]["tokens_per_second"],
        },
        "gpu": {"measured": False, "reason": "no GPU was lent to this task; rerun this script on a GPU machine"},
        "runs": results,
    }
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report["summary"], indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
