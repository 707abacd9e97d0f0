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

each for every seed of `--seeds` (a seed fixes the initial weights and the order of the batches, so
runs pair up seed by seed). FLOPs = 6 x (non-embedding parameters + hidden x vocab) per training
token, the small model's FLOPs included. For each run it reports the FLOPs needed to reach the
from-scratch model's final validation loss (per seed, against that seed's scratch run), the loss jump
at growth and the regime (tokens per parameter), and checks whether the big model from scratch beats
the control on every seed: where it does not, the comparison does not measure growth, and the verdict
says so. The shared training code is `mtlm_recipes/compute_matched.py` (also the quickstart's), the
analysis `mtlm_recipes/growth_speedup.py`.
"""

import argparse
import json
import os
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch
import transformers
from machine import host  # beside this script

from mtlm_recipes.compute_matched import (
    DATA_DIR,
    build_model,
    flop_budget,
    flops_to_reach,
    load_corpus,
    train_compute_matched,
)
from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.flops import FLOP_FORMULA, count_non_embedding_parameters, flops_per_token
from mtlm_recipes.growth_speedup import (
    DEFAULT_GROWTH,
    GrowthSpeedupConfig,
    parse_growth,
    plot_report,
    regime_title,
    summarize,
    verdict,
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
    ] + [
        ("grown", f"{small_layers} -> {big_layers}, {g.spec.depth_method} at {g.at:.0%}", small_layers, g)
        for g in args.growth
    ]
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
            "growth": [g.to_dict() for g in args.growth],
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
