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
- the small model grown x2 in depth by `growth_ops.grow` part-way, one run per `--growth`
  entry `METHOD@FRACTION` (stack, interleave, identity = function-preserving insert), then trained on
  with a fresh optimizer;
- with a `width@FRACTION` entry, the width arm: a model of half the hidden size, heads and intermediate
  size (head_dim kept) with the big model's layers, grown x2 in width (exact, with symmetry-breaking
  noise that cancels across the copies) to the big model's shape, beside its own control (that
  half-width model alone for the whole budget);

each for every seed of `--seeds` (a seed fixes the initial weights and the order of the batches, so
runs pair up seed by seed). FLOPs = 6 x (non-embedding parameters + hidden x vocab) per training
token, the small model's FLOPs included. For each run it reports the FLOPs needed to reach the
from-scratch model's final validation loss (per seed, against that seed's scratch run), the loss jump
at growth and the regime (tokens per parameter), and checks whether the big model from scratch beats
the control on every seed: where it does not, the comparison does not measure growth, and the verdict
says so. The reuse view counts only the FLOPs after growth (the small model is sunk cost): each grown
run against keep training its small model (its control, which is the same run up to growth) and the
big model from scratch at the same added FLOPs (read off scratch's curve, whose cosine schedule spans
the whole budget: it is not annealed there, which favours the grown run). The shared training code is `mtlm_recipes/compute_matched.py` (also the quickstart's), the
analysis `mtlm_recipes/growth_speedup.py`.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict
from pathlib import Path

import torch
import transformers
from machine import host  # beside this script

from mtlm_recipes.compute_matched import DATA_DIR, flop_budget, load_corpus
from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.flops import FLOP_FORMULA
from mtlm_recipes.growth_speedup import (
    DEFAULT_GROWTH,
    DEFINITIONS,
    PER_RUN_FIELDS,
    GrowthSpeedupConfig,
    parse_growth,
    plan_arms,
    plot_report,
    recorded_runs,
    regime_title,
    run_arm,
    study_report,
)

HERE = Path(__file__).resolve().parent


def describe_machine(device: str) -> dict:
    record = host()
    return {
        "device": torch.cuda.get_device_name() if device.startswith("cuda") else f"CPU ({record['cpu']})",
        **record,
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    per_run = set(PER_RUN_FIELDS)  # set per run from --seeds and --growth
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
    parser.add_argument(
        "--reuse-runs",
        type=Path,
        nargs="+",
        default=[],
        help="growth_speedup.py or growth_scale.py reports whose runs at this corpus, config and budget are taken, "
        "not trained again (training is deterministic given corpus, config, budget, arm and seed)",
    )
    args = parser.parse_args()
    if args.replot:
        plot_report(json.loads((args.out / "growth_speedup.json").read_text()), args.out / "growth_speedup.png")
        return
    cfg = GrowthSpeedupConfig(**{k: v for k, v in vars(args).items() if hasattr(GrowthSpeedupConfig, k)})
    args.out.mkdir(parents=True, exist_ok=True)
    load_start, start, cpu_start = os.getloadavg(), time.time(), time.process_time()

    corpus = load_corpus(cfg, args.data_dir)
    print(f"corpus: {corpus.train.numel():,} training tokens, {corpus.val.numel():,} validation tokens")
    budget = flop_budget(cfg, 2 * cfg.small_layers, corpus.vocab_size)
    arms = plan_arms(cfg, args.growth)
    recorded = {}
    for path in args.reuse_runs:
        recorded.update(recorded_runs(json.loads(path.read_text()), cfg, budget, corpus))
    seed_runs, reused = {arm.name: [] for arm in arms}, []
    for seed in args.seeds:
        for arm in arms:
            record = recorded.get((arm.name, seed))
            if record is None:
                record = run_arm(arm, seed, corpus, budget, args.device, args.bf16)
            else:
                reused.append(f"{arm.name}, seed {seed}")
            seed_runs[arm.name].append(record)
    analysis = study_report(arms, seed_runs, corpus, budget)
    load_end = os.getloadavg()

    report = {
        "benchmark": "growth_speedup",
        "command": " ".join(["python", "benchmarks/growth_speedup.py", *sys.argv[1:]]),
        "config": {
            **{k: v for k, v in asdict(cfg).items() if k not in per_run},
            "seeds": args.seeds,
            "growth": [g.to_dict() for g in args.growth],
            "device": args.device,
            "bf16": args.bf16,
            "data_dir": os.path.relpath(args.data_dir.resolve(), HERE.parent),
            "optimizer_after_growth": "a fresh AdamW (no moments carried over); the LR schedule goes on",
        },
        "machine": describe_machine(args.device),
        "reused_runs": {
            "from": [os.path.relpath(path.resolve(), HERE.parent) for path in args.reuse_runs],
            "runs": reused,
            "note": "runs a report made at the same config, budget, arm and seed: taken from it, not trained "
            "again, and not in wall_time_s",
        },
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
        "definitions": DEFINITIONS,
        "corpus": corpus.summary(),
        **analysis,
    }
    (args.out / "growth_speedup.json").write_text(json.dumps(report, indent=2) + "\n")
    plot_report(report, args.out / "growth_speedup.png")

    print(f"\nregime: {regime_title(report['regime'])}")
    for run in report["runs"]:
        flops = run["summary"]["fraction_of_scratch_flops"]
        reached = f"{flops['mean']:.0%} of scratch's FLOPs" if flops else "scratch's loss not reached on every seed"
        loss, jump = run["summary"]["final_val_loss"], run["summary"]["loss_jump_at_growth"]
        at_growth = f", loss jump at growth {jump['mean']:+.3f}" if jump else ""
        print(
            f"  {run['name']:>34}: final val loss {loss['mean']:.3f} [{loss['min']:.3f}, {loss['max']:.3f}], {reached}{at_growth}"
        )
    print(report["verdict"])
    print(report["reuse_verdict"])
    print(
        f"wrote {args.out / 'growth_speedup.json'} and {args.out / 'growth_speedup.png'} ({report['wall_time_s']:.0f} s)"
    )


if __name__ == "__main__":
    main()
