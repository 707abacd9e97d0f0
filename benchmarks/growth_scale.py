"""When does growth pay? The growth study (benchmarks/growth_speedup.py) at several model sizes, each at 20 tokens
per parameter and at a lower budget, with the same arms, controls and verdicts, and the view across sizes.

    python benchmarks/growth_scale.py --quick --plan    # measure seconds per step per size and estimate; train nothing
    python benchmarks/growth_scale.py --quick           # 3 sizes (8x), < 30 min on 2 quiet cores: growth_scale_quick.*
    python benchmarks/growth_scale.py                   # the full setting (4 sizes, 33x), about 2 h: growth_scale.*
    python benchmarks/growth_scale.py --quick --replot  # redraw the .png from the .json
    python benchmarks/growth_scale.py --export-points growth_scale_quick.json  # the planner's measured points
    python benchmarks/growth_scale.py --device cuda --bf16 --workers 1 --sizes gpu-h512 gpu-h1024 \\
        --data-dir CORPUS --vocab-size 8192 --seq-len 256 --batch-size 64 --out outputs/growth_scale_gpu

Every size is one study (`mtlm_recipes.growth_speedup.study_report`): the big model from scratch, the small
model alone (the control), the small model grown x2 in depth (and, with `width@`, the half-width model grown
x2 in width beside its own control), every run spending the same FLOP budget, seeds paired. Across sizes it
reports per size and budget the FLOPs to reach scratch's final loss (or "not reached"), the loss jump at
growth, the regime (tokens per parameter, epochs over the corpus), the reuse view (only FLOPs after the
small model count: grown vs keep training the small model vs scratch at equal added FLOPs), a fit of the
saving against size with its 95% interval, and where that line meets G_stack's published savings. Runs go
`--workers` at a time (default 2), one torch thread each. The analysis is `mtlm_recipes/growth_scale.py`.
"""

import argparse
import json
import os
import resource
import statistics
import sys
import time
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path

from growth_speedup import describe_machine  # beside this script

from mtlm_recipes.compute_matched import load_corpus
from mtlm_recipes.errors import ConfigError, report_user_errors
from mtlm_recipes.flops import FLOP_FORMULA
from mtlm_recipes.growth_scale import (
    SETTINGS,
    SIZES,
    ScaleSetting,
    analyse_scale,
    estimate_seconds,
    plan_studies,
    plot_scale,
    run_studies,
)
from mtlm_recipes.growth_speedup import DEFINITIONS, GrowthSpeedupConfig, study_report

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
POINTS = ROOT / "growth_ops" / "_data" / "growth_study_points.json"


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the quick setting (default: the full one)")
    parser.add_argument("--sizes", nargs="+", choices=SIZES, help="override the setting's sizes")
    parser.add_argument("--tokens-per-parameter", type=float, nargs="+", help="budgets; the first is the main one")
    parser.add_argument("--seeds", type=int, nargs="+", help="override the setting's seeds")
    parser.add_argument("--growth", nargs="+", help="grown arms at every size, METHOD@FRACTION (e.g. stack@0.4)")
    for field in ("vocab_size", "seq_len", "batch_size", "lr", "eval_points", "eval_blocks"):
        default = getattr(GrowthSpeedupConfig, field)
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(default), default=default)
    parser.add_argument("--workers", type=int, default=2, help="runs at a time, one thread each")
    parser.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU")
    parser.add_argument("--bf16", action="store_true", help="train and evaluate under bfloat16 autocast")
    parser.add_argument(
        "--data-dir",
        type=Path,
        nargs="+",
        help="corpus folders, each with train.jsonl.gz + validation.jsonl.gz (default: the setting's)",
    )
    parser.add_argument("--out", type=Path, default=HERE, help="folder for the .json and .png")
    parser.add_argument("--plan", action="store_true", help="measure seconds per step and estimate; train nothing")
    parser.add_argument("--replot", action="store_true", help="redraw the .png from the .json in --out")
    parser.add_argument(
        "--reuse-runs",
        type=Path,
        nargs="*",
        default=[HERE / "growth_speedup.json"],
        help="growth_speedup.py reports whose runs match a study here (same config and budget): not trained again",
    )
    parser.add_argument("--export-points", type=Path, help=f"write {POINTS.relative_to(ROOT)} from this JSON")
    parser.add_argument("--points-out", type=Path, default=POINTS, help="where --export-points writes")
    return parser.parse_args()


def chosen_setting(args: argparse.Namespace) -> tuple[str, ScaleSetting]:
    name = "quick" if args.quick else "full"
    setting = SETTINGS[name]
    sizes = tuple(args.sizes or setting.sizes)
    custom = any(
        v is not None for v in (args.sizes, args.tokens_per_parameter, args.seeds, args.growth, args.data_dir)
    )
    growth = {size: tuple(args.growth) if args.growth else setting.growth.get(size, ()) for size in sizes}
    setting = ScaleSetting(
        sizes=sizes,
        tokens_per_parameter=tuple(args.tokens_per_parameter or setting.tokens_per_parameter),
        seeds=tuple(args.seeds if args.seeds is not None else setting.seeds),
        growth=growth,
        corpus=tuple(args.data_dir or setting.corpus),
    )
    return (f"{name}, customised" if custom else name), setting


def corpus_description(report: dict) -> str:
    """The corpus folders a report trained on (older reports name one `data_dir`) and its token counts."""
    config, corpus = report["config"], report["corpus"]
    folders = config.get("data_dirs") or [config.get("data_dir", "examples/data/shakespeare")]
    return f"{' + '.join(folders)}: {corpus['train_tokens']:,} training tokens, byte-level BPE {corpus['vocab_size']}"


def export_points(source: Path, target: Path = POINTS) -> None:
    """The planner's measured points: one per size, budget and grown arm, with where they come from."""
    report = json.loads(source.read_text())
    studies = {(s["size"], s["tokens_per_parameter"]): s for s in report["studies"]}
    points = []
    for row in report["scale"]["rows"]:
        study = studies[(row["size"], row["tokens_per_parameter_target"])]
        for arm, record in row["arms"].items():
            method, _, at = arm.partition("@")
            fraction = record["fraction_of_scratch_flops"]
            run = next(r for r in study["runs"] if r["name"] == record["name"])
            small = study["models"]["width_small" if method == "width" else "small"]
            small_tokens = statistics.fmean(s["grown_at_flops"] for s in run["seeds"]) / small["flops_per_token"]
            points.append(
                {
                    "size": row["size"],
                    "target_parameters": row["big_parameters"],
                    "target_non_embedding_parameters": row["big_non_embedding_parameters"],
                    "from_parameters": row["small_parameters"] if method != "width" else None,
                    "tokens": row["tokens"],
                    "tokens_per_parameter": row["tokens_per_parameter"],
                    "epochs": row["epochs_over_training_split"],
                    "method": method,
                    "factor": 2,
                    "grow_at_fraction_of_budget": float(at),
                    "from_tokens_per_target_token": small_tokens / row["tokens"],
                    "big_from_scratch_beats_control": all(row["big_from_scratch_beats_each_control"].values()),
                    "seeds": len(record["saving_per_seed"]),
                    "seeds_saving_flops": sum(
                        not s["upper_bound"] and s["saving"] > 0 for s in record["saving_per_seed"]
                    ),
                    "saving_mean": None if fraction is None else 1 - fraction["mean"],
                    "saving_min": None if fraction is None else 1 - fraction["max"],
                    "reuse_seeds_won_by": record["reuse_seeds_won_by"],
                }
            )
    data = {
        "what": "measured points of mtlm's growth study across sizes: saving = 1 - FLOPs to reach scratch's final "
        "loss / scratch's (total-budget view, small model's FLOPs counted); null where some seed did not reach it",
        "source": os.path.relpath(source.resolve(), ROOT),
        "command": report["command"],
        "date": report["date"],
        "machine": report["machine"]["device"],
        "flop_formula": report["flop_formula"],
        "corpus": corpus_description(report),
        "points": points,
    }
    target.write_text(json.dumps(data, indent=2) + "\n")
    print(f"wrote {target} ({len(points)} points from {source})")


@report_user_errors
def main() -> None:
    args = parse_args()
    if args.export_points is not None:
        export_points(args.export_points, args.points_out)
        return
    name, setting = chosen_setting(args)
    stem = "growth_scale_quick" if name.startswith("quick") else "growth_scale"
    json_path, png_path = args.out / f"{stem}.json", args.out / f"{stem}.png"
    if args.replot:
        if not json_path.is_file():
            raise ConfigError(
                f"--replot redraws {json_path}, which does not exist: run the study first, or give --out."
            )
        report = json.loads(json_path.read_text())
        plot_scale(report["scale"], png_path, report["title"])
        return
    fields = ("vocab_size", "seq_len", "batch_size", "lr", "eval_points", "eval_blocks")
    base = GrowthSpeedupConfig(**{field: getattr(args, field) for field in fields})
    load_start, start = os.getloadavg(), time.time()
    corpus = load_corpus(base, setting.corpus)
    studies = plan_studies(setting, base, corpus.vocab_size)
    plan = estimate_seconds(studies, corpus.vocab_size, len(setting.seeds), args.workers)
    print(json.dumps(plan, indent=2))
    if args.plan:
        return
    os.environ["TQDM_DISABLE"] = "1"  # the workers inherit it: two runs' bars on one terminal are noise
    loads = []

    def on_done(done: int, total: int) -> None:
        loads.append(os.getloadavg()[0])
        print(f"{done}/{total} runs done, {time.time() - start:.0f} s, load {loads[-1]:.2f}", flush=True)

    args.out.mkdir(parents=True, exist_ok=True)
    cache = args.out / f"{stem}.runs.jsonl"  # finished runs: a stopped study resumes where it stopped
    reports_to_reuse = [json.loads(path.read_text()) for path in args.reuse_runs]
    reused = [
        line
        for r in reports_to_reuse
        for s in studies
        for line in s.runs_of(r, corpus)
        if line["seed"] in setting.seeds
    ]
    results = run_studies(
        studies, list(setting.seeds), corpus, args.workers, args.device, args.bf16, on_done, cache, reused
    )
    reports = {
        study.key: study_report(list(study.arms), results[study.key], corpus, study.budget) for study in studies
    }
    scale = analyse_scale(studies, reports)
    title = (
        f"growth across sizes ({name}): saving vs scratch, {len(setting.seeds)} seeds, "
        f"{', '.join(f'{b:g}' for b in setting.tokens_per_parameter)} tokens/parameter"
    )
    report = {
        "benchmark": "growth_scale",
        "setting": name,
        "title": title,
        "command": " ".join(["python", "benchmarks/growth_scale.py", *sys.argv[1:]]),
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "config": {
            "base": asdict(base),
            "sizes": {size: asdict(SIZES[size]) for size in setting.sizes},
            "tokens_per_parameter": setting.tokens_per_parameter,
            "seeds": setting.seeds,
            "growth": setting.growth,
            "workers": args.workers,
            "threads_per_worker": 1,
            "device": args.device,
            "bf16": args.bf16,
            "data_dirs": [os.path.relpath(folder.resolve(), ROOT) for folder in setting.corpus],
            "optimizer_after_growth": "a fresh AdamW (no moments carried over); the LR schedule goes on",
        },
        "machine": describe_machine(args.device),
        "plan": plan,
        "reused_runs": {
            "from": [os.path.relpath(path.resolve(), ROOT) for path in args.reuse_runs],
            "runs": sorted({f"{line['study']}: {line['arm']}, seed {line['seed']}" for line in reused}),
            "note": "runs of a growth_speedup.py report at the same config, budget and seed are the same runs; "
            "they were taken from it, not trained again, and are not in wall_time_s",
        },
        "wall_time_s": time.time() - start,
        "cpu_time_s_workers": resource.getrusage(resource.RUSAGE_CHILDREN).ru_utime,
        "load_average_start": load_start,
        "load_average_end": os.getloadavg(),
        "load_average_1min_at_each_run_end": loads,
        "load_note": "os.getloadavg(); this run adds about its --workers; the rest is other work on the same cores",
        "flop_formula": FLOP_FORMULA + "; the small model's FLOPs are counted in grown runs",
        "definitions": DEFINITIONS,
        "corpus": corpus.summary(),
        "scale": scale,
        "studies": [
            {
                "size": s.size,
                "tokens_per_parameter": s.tokens_per_parameter,
                "cfg": asdict(s.cfg),
                "flop_budget": s.budget,
                **reports[s.key],
            }
            for s in studies
        ],
    }
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    plot_scale(scale, png_path, title)
    cache.unlink()
    print(scale["verdict"])
    print(f"wrote {json_path} and {png_path} ({report['wall_time_s']:.0f} s)")


if __name__ == "__main__":
    main()
