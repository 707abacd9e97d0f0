"""Does growing a small model save training compute? Grown runs against the big model from scratch and
against the control the naive comparison forgets: the small model alone for the whole budget.

    python benchmarks/growth_speedup.py     # miniature default on CPU; writes growth_speedup.json/.png beside this file
    python benchmarks/growth_speedup.py --replot     # redraw growth_speedup.png from growth_speedup.json
    python benchmarks/growth_speedup.py --device cuda --bf16 --data-dir CORPUS --vocab-size 8192 \\
        --hidden-size 512 --intermediate-size 1408 --num-attention-heads 8 --small-layers 4 \\
        --seq-len 256 --batch-size 64 --scratch-steps 36000 --seeds 0 1 2 --out outputs/growth_speedup_gpu

The second command is a GPU size (4 -> 8 layers, 30M parameters, 600M tokens: 20 tokens per
parameter), not measured yet: it needs a local corpus (`--data-dir`) far larger than the embedded
one (about 2M tokens, which it would repeat 300 times; the JSON reports the epochs).

Every run spends the same budget of training FLOPs, `--scratch-steps` steps of the big model
(2 x `--small-layers` layers), on the embedded corpus (Shakespeare, two whole plays held out for
validation; `--data-dir` takes another folder of the same layout):

- the big model from scratch;
- the small model alone for the whole budget (the control, ../shared/GROWTH_STUDY.md);
- the small model grown x2 in depth by `growth_ops.grow_depth` part-way, one run per `--growth`
  entry `METHOD@FRACTION` (stack, interleave, identity = function-preserving insert), then trained on
  with a fresh optimizer;

each for every seed of `--seeds` (a seed fixes the initial weights and the order of the batches, so
runs pair up seed by seed). FLOPs = 6 x (non-embedding parameters + hidden x vocab) per training
token, the small model's FLOPs included. For each run it reports the FLOPs needed to reach the
from-scratch model's final validation loss (per seed, against that seed's scratch run), the loss jump
at growth and the regime (tokens per parameter), and checks whether the big model from scratch beats
the control on every seed: where it does not, the comparison does not measure growth, and the verdict
says so. The shared training code is `examples/compute_matched.py` (also the quickstart's).
"""

import argparse
import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import transformers

# The benchmark measures with the examples' own training code, so the quickstart and this benchmark
# count FLOPs and train the same way: import it from the examples folder (not an installed package),
# and `machine` from beside this script (also when it is loaded by path, as the tests do).
sys.path[:0] = [str(Path(__file__).resolve().parent), str(Path(__file__).resolve().parents[1] / "examples")]
from compute_matched import (  # noqa: E402
    DATA_DIR,
    FLOP_FORMULA,
    ComputeMatchedConfig,
    Growth,
    build_model,
    count_non_embedding_parameters,
    flop_budget,
    flops_per_token,
    flops_to_reach,
    load_corpus,
    plot_loss_vs_flops,
    train_compute_matched,
)
from machine import host  # noqa: E402

HERE = Path(__file__).resolve().parent
METHODS = ("stack", "interleave", "identity")
DEFAULT_GROWTH = ("stack@0.2", "stack@0.4", "stack@0.6", "interleave@0.4", "identity@0.4")


@dataclass
class GrowthSpeedupConfig(ComputeMatchedConfig):
    # The miniature: small enough that the budget buys about 20 tokens per parameter of the big model in
    # minutes on a CPU, where the big model from scratch beats the small one (at 0.2-0.3 tokens per
    # parameter the small one wins; ../shared/GROWTH_STUDY.md).
    vocab_size: int = 1024  # byte-level BPE trained on the training split
    hidden_size: int = 48
    intermediate_size: int = 128
    num_attention_heads: int = 4
    small_layers: int = 2  # grown x2 to 4
    seq_len: int = 64  # tokens per block
    batch_size: int = 32  # blocks per step
    scratch_steps: int = 1560  # steps of the big model from scratch; fixes the FLOP budget
    lr: float = 3e-3
    warmup_steps: int = 50
    eval_points: int = 24  # validation evaluations per run
    eval_blocks: int = 256  # validation blocks per evaluation


def parse_growth(entry: str) -> Growth:
    """`"stack@0.4"` -> `Growth("stack", 0.4)`, with an error that shows the expected form."""
    method, _, fraction = entry.partition("@")
    try:
        at = float(fraction)
    except ValueError:
        at = -1.0
    if method not in METHODS or not 0 < at < 1:
        raise argparse.ArgumentTypeError(
            f"--growth {entry!r}: expected METHOD@FRACTION with METHOD one of {', '.join(METHODS)} and "
            "0 < FRACTION < 1 (the share of the budget spent before growth), e.g. stack@0.4"
        )
    return Growth(method=method, at=at)


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def summarize(name: str, kind: str, growth: Growth | None, seed_runs: list[dict]) -> dict:
    """One run over all seeds: per-seed records and their mean, min and max."""
    reached = [r["flops_to_reach_scratch_final_loss"] for r in seed_runs]
    all_reached = all(flops is not None for flops in reached)
    summary = {
        "final_val_loss": spread([r["points"][-1]["val_loss"] for r in seed_runs]),
        "seeds_reaching_scratch_final_loss": sum(flops is not None for flops in reached),
        # Only when every seed reaches it; a mean over the seeds that happened to reach it would flatter.
        "flops_to_reach_scratch_final_loss": spread(reached) if all_reached else None,
        "fraction_of_scratch_flops": (
            spread([r["fraction_of_scratch_flops"] for r in seed_runs]) if all_reached else None
        ),
        "loss_jump_at_growth": (spread([r["loss_jump_at_growth"] for r in seed_runs]) if growth is not None else None),
    }
    return {
        "name": name,
        "kind": kind,
        "growth": asdict(growth) if growth is not None else None,
        "summary": summary,
        "seeds": seed_runs,
    }


def band(run: dict) -> dict:
    """The run as one plotted line: mean over seeds, with the min-max band (seeds share their eval points)."""
    seed_points = [r["points"] for r in run["seeds"]]
    at_each_point = [[p["val_loss"] for p in points] for points in zip(*seed_points, strict=True)]
    return {
        "name": f"{run['name']} ({len(seed_points)} seeds)",
        "points": [
            {"flops": p["flops"], "val_loss": statistics.fmean(losses)}
            for p, losses in zip(seed_points[0], at_each_point, strict=True)
        ],
        "val_loss_min": [min(losses) for losses in at_each_point],
        "val_loss_max": [max(losses) for losses in at_each_point],
        "grown_at_flops": run["seeds"][0]["grown_at_flops"],
    }


def regime_title(regime: dict) -> str:
    return f"{regime['tokens_per_parameter']:.3g} tokens per parameter (big model); " + (
        "the big model from scratch beats the small control"
        if regime["big_from_scratch_beats_small_control"]
        else "it does not beat the small control: growth not measured"
    )


def plot_report(report: dict, path: Path) -> None:
    """The plot of a report: every run's mean over seeds with its band, and a zoom on the second half."""
    regime = report["regime"]
    target = regime["scratch_final_val_loss"]["mean"]
    plot_loss_vs_flops([band(r) for r in report["runs"]], regime_title(regime), path, target=target, zoom_from=0.5)


def describe_machine(device: str) -> dict:
    record = host()
    return {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({record['cpu']})",
        **record,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


def verdict(big_beats_small: bool, tokens_per_parameter: float, grown: list[dict]) -> str:
    """The conclusion in words; growth counts as measured only where the big model beats the control."""
    regime = f"At {tokens_per_parameter:.2f} tokens per parameter (big model)"
    if not big_beats_small:
        return (
            f"{regime} the big model from scratch does not beat the small model alone on every seed, so this "
            "comparison does NOT measure growth: a grown run that reaches scratch's loss early only shows that the "
            "small model is efficient at this budget. Growth was not measured; raise --scratch-steps (more tokens "
            "per parameter) until the big model wins."
        )
    fractions = {r["name"]: r["summary"]["fraction_of_scratch_flops"] for r in grown}
    helped = {name: f for name, f in fractions.items() if f is not None and f["max"] < 1}
    if not helped:
        return (
            f"{regime} the big model from scratch beats the small control on every seed, so growth is what is "
            "measured here, and it did NOT save compute: no grown run reached scratch's final validation loss "
            "with fewer FLOPs than scratch on every seed."
        )
    best = min(helped, key=lambda name: helped[name]["mean"])
    return (
        f"{regime} the big model from scratch beats the small control on every seed, so growth is what is "
        f"measured here. Fewer FLOPs than scratch to reach its final loss on every seed: {', '.join(helped)}. "
        f"Best: {best}, {helped[best]['mean']:.0%} of scratch's FLOPs on average (speed-up "
        f"{1 / helped[best]['mean'] - 1:.0%} as G_stack defines it: scratch FLOPs / grown FLOPs - 1)."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    per_run = {"seed", "grow_at"}  # set per run from --seeds and --growth
    for field, value in asdict(GrowthSpeedupConfig()).items():
        if field not in per_run:
            parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument(
        "--growth",
        type=parse_growth,
        nargs="*",
        default=[parse_growth(g) for g in DEFAULT_GROWTH],
        help=f"grown runs as METHOD@FRACTION (default: {' '.join(DEFAULT_GROWTH)})",
    )
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU")
    parser.add_argument("--bf16", action="store_true", help="train and evaluate under bfloat16 autocast")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="train.jsonl.gz + validation.jsonl.gz")
    parser.add_argument("--out", type=Path, default=HERE, help="folder for growth_speedup.json and .png")
    parser.add_argument("--replot", action="store_true", help="redraw the .png from the .json in --out; train nothing")
    args = parser.parse_args()
    if args.replot:
        plot_report(json.loads((args.out / "growth_speedup.json").read_text()), args.out / "growth_speedup.png")
        return
    cfg = GrowthSpeedupConfig(**{k: v for k, v in vars(args).items() if hasattr(GrowthSpeedupConfig, k)})
    args.out.mkdir(parents=True, exist_ok=True)
    load_start, start, cpu_start = os.getloadavg(), time.time(), time.process_time()

    corpus = load_corpus(cfg, args.data_dir)
    print(f"corpus: {corpus.train.numel():,} training tokens, {corpus.val.numel():,} validation tokens")
    small_layers, big_layers = cfg.small_layers, 2 * cfg.small_layers
    budget = flop_budget(cfg, big_layers, corpus.vocab_size)
    plan = [
        ("scratch", f"{big_layers} layers from scratch", big_layers, None),
        ("control", f"{small_layers} layers alone (control)", small_layers, None),
    ] + [("grown", f"{small_layers} -> {big_layers}, {g.method} at {g.at:.0%}", small_layers, g) for g in args.growth]
    seed_runs = {name: [] for _, name, _, _ in plan}
    for seed in args.seeds:
        for _, name, layers, growth in plan:
            run_cfg = replace(cfg, seed=seed)
            result, _ = train_compute_matched(
                f"{name}, seed {seed}", run_cfg, corpus, layers, budget, growth, args.device, args.bf16
            )
            seed_runs[name].append({**result, "name": name, "seed": seed})

    # Each seed's runs are judged against that seed's scratch run: same initial draws, same batches.
    scratch_runs = seed_runs[plan[0][1]]
    for scratch in scratch_runs:
        target = scratch["points"][-1]["val_loss"]
        scratch_flops = flops_to_reach(scratch["points"], target)
        for runs in seed_runs.values():
            run = next(r for r in runs if r["seed"] == scratch["seed"])
            run["scratch_final_val_loss"] = target
            run["flops_to_reach_scratch_final_loss"] = flops_to_reach(run["points"], target)
            reached = run["flops_to_reach_scratch_final_loss"]
            run["fraction_of_scratch_flops"] = None if reached is None else reached / scratch_flops
    runs = [summarize(name, kind, growth, seed_runs[name]) for kind, name, _, growth in plan]
    scratch, control, grown = runs[0], runs[1], runs[2:]

    big_beats_small = all(
        s["points"][-1]["val_loss"] < c["points"][-1]["val_loss"]
        for s, c in zip(scratch["seeds"], control["seeds"], strict=True)
    )
    tokens = scratch["seeds"][0]["tokens"]
    models = {
        size: {
            "layers": layers,
            "parameters": sum(p.numel() for p in model.parameters()),
            "non_embedding_parameters": count_non_embedding_parameters(model),
            "flops_per_token": flops_per_token(model),
        }
        for size, layers in (("small", small_layers), ("big", big_layers))
        for model in [build_model(cfg, layers, corpus.vocab_size)]
    }
    tokens_per_parameter = tokens / models["big"]["parameters"]
    regime = {
        "tokens_big_from_scratch": tokens,
        "tokens_per_parameter": tokens_per_parameter,
        "tokens_per_non_embedding_parameter": tokens / models["big"]["non_embedding_parameters"],
        "epochs_over_training_split": tokens / corpus.train.numel(),
        "scratch_final_val_loss": scratch["summary"]["final_val_loss"],
        "control_final_val_loss": control["summary"]["final_val_loss"],
        "big_from_scratch_beats_small_control": big_beats_small,
        "rule": "on every seed, the big model from scratch ends with a lower validation loss than the small "
        "model alone (same seed, same FLOP budget)",
    }
    load_end = os.getloadavg()

    report = {
        "benchmark": "growth_speedup",
        "command": " ".join(["python", "benchmarks/growth_speedup.py", *sys.argv[1:]]),
        "config": {
            **{k: v for k, v in asdict(cfg).items() if k not in per_run},
            "seeds": args.seeds,
            "growth": [asdict(g) for g in args.growth],
            "device": args.device,
            "bf16": args.bf16,
            "data_dir": os.path.relpath(args.data_dir.resolve(), HERE.parent),
            "optimizer_after_growth": "a fresh AdamW (no moments carried over); the LR schedule goes on",
        },
        "machine": describe_machine(args.device),
        "wall_time_s": time.time() - start,
        "cpu_time_s": time.process_time() - cpu_start,
        "load_average_start": load_start,
        "load_average_end": load_end,
        "load_note": "os.getloadavg() (1, 5, 15 min) at start and end: other work on the same cores inflates the "
        "wall time where the load exceeds what this run adds (its thread count); cpu_time_s is this process's "
        "CPU time, threads summed",
        "gpu_run": (
            "not measured: this run is on the CPU; the GPU sizes are in this script's docstring"
            if args.device == "cpu"
            else f"this run ({args.device})"
        ),
        "flop_formula": FLOP_FORMULA + "; the small model's FLOPs are counted in grown runs",
        "flop_budget": budget,
        "definitions": {
            "flops_to_reach_scratch_final_loss": "training FLOPs at which the run's validation loss first reaches the "
            "final validation loss of the from-scratch run of the same seed (linear interpolation between "
            "evaluations); null if it never does within the budget",
            "fraction_of_scratch_flops": "flops_to_reach_scratch_final_loss / the same for the from-scratch run; "
            "G_stack's speed-up is 1 / fraction - 1",
            "loss_jump_at_growth": "validation loss just after growth minus just before",
        },
        "corpus": {
            "train_tokens": corpus.train.numel(),
            "validation_tokens_per_evaluation": corpus.val.numel(),
            "vocab_size": corpus.vocab_size,
        },
        "models": models,
        "regime": regime,
        "runs": runs,
        "verdict": verdict(big_beats_small, tokens_per_parameter, grown),
    }
    (args.out / "growth_speedup.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, args.out / "growth_speedup.png")

    print(f"\nregime: {regime_title(regime)}")
    for run in runs:
        flops = run["summary"]["fraction_of_scratch_flops"]
        reached = f"{flops['mean']:.0%} of scratch's FLOPs" if flops else "scratch's loss not reached on every seed"
        loss, jump = run["summary"]["final_val_loss"], run["summary"]["loss_jump_at_growth"]
        at_growth = f", loss jump at growth {jump['mean']:+.3f}" if jump else ""
        print(
            f"  {run['name']:>34}: final val loss {loss['mean']:.3f} [{loss['min']:.3f}, {loss['max']:.3f}], {reached}{at_growth}"
        )
    print(report["verdict"])
    print(
        f"wrote {args.out / 'growth_speedup.json'} and {args.out / 'growth_speedup.png'} ({report['wall_time_s']:.0f} s)"
    )


if __name__ == "__main__":
    main()
