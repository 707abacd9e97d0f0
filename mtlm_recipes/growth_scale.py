"""The growth study across model sizes (`benchmarks/growth_scale.py`): its sizes and settings, the plan of its
compute (measured seconds per step), the runs in a pool of single-thread processes, and the analysis across
sizes (saving against size, its fit, and where that fit meets G_stack's published numbers).

One size is one study of `mtlm_recipes.growth_speedup` (same arms, controls, verdicts); this module only adds
the sizes, the scheduling and the view across them.
"""

import json
import math
import os
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, replace
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from scipy import stats

from .compute_matched import DATA_DIR, NOVELS_DIR, Corpus, build_model, flop_budget, make_optimizer
from .errors import ConfigError
from .flops import flops_per_token
from .growth_speedup import Arm, GrowthSpeedupConfig, parse_growth, plan_arms, recorded_runs, run_arm


@dataclass(frozen=True)
class ModelSize:
    """The big model of one size (the small one has half its layers; the width arm's, half its width)."""

    hidden_size: int
    num_attention_heads: int
    intermediate_size: int
    small_layers: int = 2  # grown x2


# Llama-style M1 shapes, intermediate about 8/3 of hidden; head_dim 12 except h16 (8: its width arm needs 2 heads).
SIZES = {
    "h16": ModelSize(16, 2, 48),
    "h24": ModelSize(24, 2, 64),
    "h48": ModelSize(48, 4, 128),  # the size of benchmarks/growth_speedup.py
    "h96": ModelSize(96, 8, 256),
    "h192": ModelSize(192, 16, 512),
    "gpu-h512": ModelSize(512, 8, 1408, small_layers=4),  # 30M parameters: a GPU size
    "gpu-h1024": ModelSize(1024, 16, 2816, small_layers=6),  # 190M parameters: a GPU size
}
DEPTH_ARMS = ("stack@0.2", "stack@0.4", "stack@0.6", "interleave@0.4", "identity@0.4")


@dataclass(frozen=True)
class ScaleSetting:
    """Which sizes, budgets (tokens per parameter of the big model, the first is the main one), seeds and arms."""

    sizes: tuple[str, ...]
    tokens_per_parameter: tuple[float, ...]
    seeds: tuple[int, ...]
    growth: dict[str, tuple[str, ...]]  # size -> its grown arms (scratch and the controls always run)
    corpus: tuple[Path, ...] = (DATA_DIR,)  # corpus folders (`load_corpus`): enough text for few repeats


SETTINGS = {
    # Under 30 minutes on 2 quiet cores (two single-thread runs at a time): 8.3x in non-embedding parameters;
    # the largest size runs one depth arm (a run of it costs about 4x one of h24: 3x the steps, each slower).
    "quick": ScaleSetting(
        sizes=("h16", "h24", "h48"),
        tokens_per_parameter=(20.0, 5.0),
        seeds=(0, 1),
        growth={**dict.fromkeys(("h16", "h24"), ("stack@0.4", "width@0.4")), "h48": ("stack@0.4",)},
    ),
    # About 2 hours on 2 quiet cores (about 30 000 s of steps: ~60 ms a step at h48, ~120 ms at h96): 33x in
    # non-embedding parameters. Larger sizes run fewer arms; h48 at 20 tokens per parameter is
    # benchmarks/growth_speedup.py's run, whose JSON it reuses (--reuse-runs).
    "full": ScaleSetting(
        sizes=("h16", "h24", "h48", "h96"),
        tokens_per_parameter=(20.0, 5.0),
        seeds=(0, 1, 2),
        growth={
            **dict.fromkeys(("h16", "h24", "h48"), (*DEPTH_ARMS, "width@0.4")),
            "h96": ("stack@0.4",),
        },
        # h96 at 20 tokens per parameter reads 10.8M tokens: 5.3 epochs of Shakespeare alone, 2.1 with the novels.
        corpus=(DATA_DIR, NOVELS_DIR),
    ),
}

# G_stack's published results (../shared/GROWTH_STUDY.md): 1.1B target, 49% speed-up (scratch FLOPs / grown
# FLOPs - 1, so 1 - 1/1.49 fewer FLOPs); 7B target, the scratch model's 300B-token loss at 194B tokens.
GSTACK_PUBLISHED = (
    {"non_embedding_parameters": 1.1e9, "saving": 1 - 1 / 1.49, "what": "1.1B from a 400M base: 49% speed-up"},
    {"non_embedding_parameters": 7e9, "saving": 1 - 194 / 300, "what": "7B: scratch's 300B-token loss at 194B"},
)


def size_config(base: GrowthSpeedupConfig, size: ModelSize, tokens_per_parameter: float) -> GrowthSpeedupConfig:
    """`base` at `size`, its budget set to `tokens_per_parameter` tokens per parameter of the big model.

    Warmup keeps the study's share of the schedule (50 of 1560 steps), at least 5 steps.
    """
    if tokens_per_parameter <= 0:
        raise ConfigError(f"--tokens-per-parameter must be positive, got {tokens_per_parameter}.")
    shaped = replace(base, **{k: getattr(size, k) for k in size.__dataclass_fields__})
    parameters = sum(p.numel() for p in build_model(shaped, 2 * size.small_layers, base.vocab_size).parameters())
    # Rounded to tens of steps: h48 at 20 tokens per parameter is then exactly benchmarks/growth_speedup.py's run.
    steps = max(10, round(tokens_per_parameter * parameters / (base.batch_size * base.seq_len), -1))
    return replace(shaped, scratch_steps=steps, warmup_steps=max(5, round(steps * 50 / 1560)))


@dataclass(frozen=True)
class Study:
    """One size at one budget: its config, FLOP budget and arms."""

    size: str
    tokens_per_parameter: float
    cfg: GrowthSpeedupConfig
    budget: float
    arms: tuple[Arm, ...]

    def runs_of(self, report: dict, corpus: Corpus) -> list[dict]:
        """Cache lines of the runs a report (`benchmarks/growth_speedup.py`'s or this study's) made at this study's
        config and budget on `corpus`: the same runs, so a scale study need not train them again (empty if the
        corpus or config differs)."""
        names = {arm.name for arm in self.arms}
        return [
            self.cache_line(name, seed, corpus, record)
            for (name, seed), record in recorded_runs(report, self.cfg, self.budget, corpus).items()
            if name in names
        ]

    def cache_line(self, arm_name: str, seed: int, corpus: Corpus, record: dict) -> dict:
        """One finished run as `run_studies`' cache keeps it: keyed by study, arm, seed, budget and corpus."""
        return {
            "study": self.key,
            "arm": arm_name,
            "seed": seed,
            "budget": self.budget,
            "corpus": corpus.fingerprint,
            "record": record,
        }

    @property
    def key(self) -> str:
        return f"{self.size} at {self.tokens_per_parameter:g} tokens/parameter"


def plan_studies(setting: ScaleSetting, base: GrowthSpeedupConfig, vocab_size: int) -> list[Study]:
    """Every (size, budget) of `setting`; the lower budgets run the same arms as the main one."""
    unknown = [size for size in setting.sizes if size not in SIZES]
    if unknown:
        raise ConfigError(f"unknown --sizes {', '.join(unknown)}: choose from {', '.join(SIZES)}.")
    studies = []
    for size in setting.sizes:
        growths = [parse_growth(entry) for entry in setting.growth.get(size, ())]
        for tokens_per_parameter in setting.tokens_per_parameter:
            cfg = size_config(base, SIZES[size], tokens_per_parameter)
            budget = flop_budget(cfg, 2 * cfg.small_layers, vocab_size)
            studies.append(Study(size, tokens_per_parameter, cfg, budget, tuple(plan_arms(cfg, growths))))
    return studies


def arm_steps(arm: Arm, budget: float, vocab_size: int) -> float:
    """Optimizer steps the arm takes to spend `budget`: at its starting shape, then (grown) at the big one."""

    def step_flops(cfg: GrowthSpeedupConfig, layers: int) -> float:
        return flops_per_token(build_model(cfg, layers, vocab_size)) * cfg.batch_size * cfg.seq_len

    start = step_flops(arm.cfg, arm.layers)
    if arm.growth is None:
        return budget / start
    if arm.growth.spec.grows_width:
        doubled = {k: 2 * getattr(arm.cfg, k) for k in ("hidden_size", "num_attention_heads", "intermediate_size")}
        end = step_flops(replace(arm.cfg, **doubled), arm.layers)
    else:
        end = step_flops(arm.cfg, 2 * arm.cfg.small_layers)
    return arm.growth.at * budget / start + (1 - arm.growth.at) * budget / end


def measure_step_seconds(cfg: GrowthSpeedupConfig, layers: int, vocab_size: int, steps: int = 8) -> float:
    """Seconds per training step of one shape on this machine now (after 2 warm-up steps), on one thread."""
    torch.manual_seed(0)
    model = build_model(cfg, layers, vocab_size).train()
    optimizer = make_optimizer(model, cfg.lr)
    batch = torch.randint(vocab_size, (cfg.batch_size, cfg.seq_len))
    for step in range(steps + 2):
        if step == 2:
            start = time.perf_counter()
        model(batch, labels=batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - start) / steps


def estimate_seconds(studies: list[Study], vocab_size: int, seeds: int, workers: int) -> dict:
    """The compute plan: measured seconds per step of each size's big model, times every run's steps."""
    per_size = {}
    for study in studies:
        if study.size not in per_size:
            per_size[study.size] = measure_step_seconds(study.cfg, study.arms[0].layers, vocab_size)
    rows = []
    for study in studies:
        seconds = per_size[study.size]  # the big model's step; smaller shapes cost at most this (overhead-bound)
        steps = sum(arm_steps(arm, study.budget, vocab_size) for arm in study.arms)
        rows.append({"study": study.key, "steps_all_arms_one_seed": steps, "seconds": steps * seconds * seeds})
    total = sum(row["seconds"] for row in rows)
    return {
        "big_model_seconds_per_step": per_size,
        "studies": rows,
        "total_seconds_one_worker": total,
        "estimated_wall_seconds": total / workers,
        "rule": "every step costed at the big model's measured seconds per step (smaller shapes are barely "
        "cheaper per step here: the step time is dominated by the vocabulary head and per-op overhead), "
        "evaluations not counted; measured under the load of the moment",
    }


_WORKER_CORPUS: Corpus | None = None


def _start_worker(corpus: Corpus, threads: int, study: int) -> None:
    global _WORKER_CORPUS
    torch.set_num_threads(threads)
    _WORKER_CORPUS = corpus
    # The study's pid comes from the study itself: a worker reaches this after its imports, when the study may
    # already be gone and its own parent already another process.
    threading.Thread(target=_exit_when_orphaned, args=(study,), daemon=True).start()


def _exit_when_orphaned(parent: int) -> None:
    """Stop this worker once the study that started it is gone (killed, or its terminal closed): the pool's
    own shutdown never runs then, and the worker would train on for nobody, holding its core."""
    while os.getppid() == parent:
        time.sleep(2)
    os._exit(1)


def _run_job(arm: Arm, seed: int, budget: float, device: str, bf16: bool) -> dict:
    return run_arm(arm, seed, _WORKER_CORPUS, budget, device, bf16)


def run_studies(
    studies: list[Study],
    seeds: list[int],
    corpus: Corpus,
    workers: int,
    device: str = "cpu",
    bf16: bool = False,
    on_done=None,
    cache: Path | None = None,
    reused: Sequence[dict] = (),
) -> dict[str, dict[str, list[dict]]]:
    """Every arm of every study for every seed, `workers` single-thread processes at a time, longest first.

    Args:
        studies (`list[Study]`): From `plan_studies`.
        seeds (`list[int]`): The seeds every arm runs with.
        corpus (`Corpus`): Sent once to each worker.
        workers (`int`): Processes at a time (each with one torch thread on the CPU).
        device (`str`, *optional*, defaults to `"cpu"`): Where every run trains.
        bf16 (`bool`, *optional*, defaults to `False`): bfloat16 autocast.
        on_done (*optional*): Called with (finished, total) after every run, e.g. to sample the load.
        cache (`Path`, *optional*): A JSON-lines file of finished runs: each run is appended as it ends, and
            runs already there (same study, arm, seed, budget and corpus) are not run again, so a stopped study
            resumes.
        reused (`list[dict]`, *optional*): Runs taken from earlier reports (`Study.runs_of`), not run again.

    Returns:
        `dict[str, dict[str, list[dict]]]`: study key -> arm name -> its seeds' records, in seed order.
    """
    jobs = [(study, arm, seed) for study in studies for arm in study.arms for seed in seeds]
    results = {study.key: {arm.name: {} for arm in study.arms} for study in studies}
    cached = {**_cache_by_key(reused), **_cache_by_key(_read_cache(cache))}
    for study, arm, seed in jobs:
        record = cached.get((study.key, arm.name, seed, study.budget, corpus.fingerprint))
        if record is not None:
            results[study.key][arm.name][seed] = record
    jobs = [(study, arm, seed) for study, arm, seed in jobs if seed not in results[study.key][arm.name]]
    if jobs:
        _run_pool(jobs, results, corpus, workers, device, bf16, on_done, cache)
    return {key: {name: [runs[s] for s in seeds] for name, runs in arms.items()} for key, arms in results.items()}


def _run_pool(jobs: list[tuple], results: dict, corpus: Corpus, workers: int, device, bf16, on_done, cache) -> None:
    """Run `jobs` longest first (by steps x width), filling `results` and appending each to `cache` as it ends."""
    jobs = sorted(jobs, key=lambda job: -arm_steps(job[1], job[0].budget, corpus.vocab_size) * job[0].cfg.hidden_size)
    # Spawned, not forked: a forked child would inherit the parent's torch and tokenizers thread pools.
    context = get_context("spawn")
    with ProcessPoolExecutor(
        workers, mp_context=context, initializer=_start_worker, initargs=(corpus, 1, os.getpid())
    ) as pool:
        futures = {
            pool.submit(_run_job, arm, seed, study.budget, device, bf16): (study, arm, seed)
            for study, arm, seed in jobs
        }
        for done, future in enumerate(as_completed(futures), 1):
            study, arm, seed = futures[future]
            results[study.key][arm.name][seed] = record = future.result()
            if cache is not None:
                with cache.open("a") as file:
                    file.write(json.dumps(study.cache_line(arm.name, seed, corpus, record)) + "\n")
            if on_done is not None:
                on_done(done, len(jobs))


def _read_cache(cache: Path | None) -> list[dict]:
    if cache is None or not cache.is_file():
        return []
    return [json.loads(line) for line in cache.read_text().splitlines() if line.strip()]


def _cache_by_key(lines: Sequence[dict]) -> dict[tuple, dict]:
    """Records by (study, arm, seed, budget, corpus); lines written before the corpus was recorded match none."""
    return {
        (line["study"], line["arm"], line["seed"], line["budget"], line.get("corpus")): line["record"]
        for line in lines
    }


def seed_savings(run: dict) -> list[dict]:
    """Per seed, 1 - fraction of scratch's FLOPs; where scratch's loss is not reached, the bound it gives.

    A seed that does not reach scratch's final loss within the budget needs more than the budget, so its
    saving is below 1 - budget / scratch's FLOPs to reach it (<= 0): recorded as that bound, marked.
    """
    savings = []
    for seed_run in run["seeds"]:
        fraction = seed_run["fraction_of_scratch_flops"]
        if fraction is not None:
            savings.append({"seed": seed_run["seed"], "saving": 1 - fraction, "upper_bound": False})
            continue
        scratch_reach = seed_run["reuse"]["scratch_flops_to_reach_its_final_loss"]
        bound = 1 - seed_run["points"][-1]["flops"] / scratch_reach
        savings.append({"seed": seed_run["seed"], "saving": bound, "upper_bound": True})
    return savings


def size_row(study: Study, report: dict) -> dict:
    """One line of the table across sizes: the regime, and per grown arm its saving, jump and reuse result."""
    regime, models = report["regime"], report["models"]
    arms = {}
    for run in report["runs"]:
        if run["kind"] != "grown":
            continue
        summary, savings = run["summary"], seed_savings(run)
        reuse = summary["reuse"]
        arms[f"{run['growth']['method']}@{run['growth']['at']:g}"] = {
            "name": run["name"],
            "flops_to_reach_scratch_final_loss": summary["flops_to_reach_scratch_final_loss"] or "not reached",
            "seeds_reaching_scratch_final_loss": summary["seeds_reaching_scratch_final_loss"],
            "fraction_of_scratch_flops": summary["fraction_of_scratch_flops"],
            "saving_per_seed": savings,
            "loss_jump_at_growth": summary["loss_jump_at_growth"],
            "reuse_seeds_won_by": reuse["seeds_won_by"],
            "reuse_keep_training_small_wins_every_seed": reuse["keep_training_small_wins_every_seed"],
            "reuse_val_loss_at_added_flops": reuse["val_loss_at_added_flops"],
        }
    return {
        "size": study.size,
        "tokens_per_parameter_target": study.tokens_per_parameter,
        "big_parameters": models["big"]["parameters"],
        "big_non_embedding_parameters": models["big"]["non_embedding_parameters"],
        "small_parameters": models["small"]["parameters"],
        "tokens_per_parameter": regime["tokens_per_parameter"],
        "tokens": regime["tokens_big_from_scratch"],
        "epochs_over_training_split": regime["epochs_over_training_split"],
        "flop_budget": study.budget,
        "big_from_scratch_beats_each_control": regime["big_from_scratch_beats_each_control"],
        "scratch_final_val_loss": regime["scratch_final_val_loss"],
        "arms": arms,
    }


def fit_saving(rows: list[dict], arm: str) -> dict | None:
    """Least squares of log10(fraction of scratch's FLOPs) against log10(non-embedding parameters) over every
    seed of `arm`, with the 95% interval of the line at G_stack's published sizes.

    In log fraction the line keeps the saving below 100% however far it is extrapolated.
    """
    xs, ys, bounds = [], [], 0
    for row in rows:
        for seed in row["arms"].get(arm, {}).get("saving_per_seed", []):
            xs.append(math.log10(row["big_non_embedding_parameters"]))
            ys.append(math.log10(1 - seed["saving"]))
            bounds += seed["upper_bound"]
    if len(set(xs)) < 3:
        return None
    fit = stats.linregress(xs, ys)
    x, dof = np.array(xs), len(xs) - 2
    t = float(stats.t.ppf(0.975, dof))
    residual = math.sqrt(sum((y - fit.intercept - fit.slope * xi) ** 2 for xi, y in zip(xs, ys, strict=True)) / dof)

    def predict(parameters: float) -> dict:
        at = math.log10(parameters)
        half = t * residual * math.sqrt(1 / len(xs) + (at - x.mean()) ** 2 / ((x - x.mean()) ** 2).sum())
        mean = fit.intercept + fit.slope * at
        return {"mean": 1 - 10**mean, "low": float(1 - 10 ** (mean + half)), "high": float(1 - 10 ** (mean - half))}

    published = []
    for point in GSTACK_PUBLISHED:
        line = predict(point["non_embedding_parameters"])
        published.append({**point, "our_fit": line, "consistent": line["low"] <= point["saving"] <= line["high"]})
    return {
        "arm": arm,
        "model": "log10(1 - saving) = intercept + slope * log10(non-embedding parameters), every seed a point",
        "slope_per_decade": float(fit.slope),
        "slope_stderr": float(fit.stderr),
        "slope_95": [float(fit.slope - t * fit.stderr), float(fit.slope + t * fit.stderr)],
        "intercept": float(fit.intercept),
        "points": len(xs),
        "points_that_are_upper_bounds": bounds,
        "range_non_embedding_parameters": [10 ** min(xs), 10 ** max(xs)],
        "at_gstack_published": published,
        "note": "the line is extrapolated over 3-4 decades to G_stack's sizes: its interval says how little our "
        "sizes constrain theirs; points that did not reach scratch's loss enter as their upper bound on the "
        "saving, which flatters growth",
    }


def scale_verdict(rows: list[dict], fits: list[dict]) -> str:
    """The view across sizes in words: where growth saved FLOPs on every seed, the reuse winner, the fits."""
    lines = []
    for row in rows:
        helped = [
            f"{arm} ({statistics.fmean(s['saving'] for s in record['saving_per_seed']):.0%})"
            for arm, record in row["arms"].items()
            if not any(s["upper_bound"] or s["saving"] <= 0 for s in record["saving_per_seed"])
        ]
        controls = row["big_from_scratch_beats_each_control"]
        regime = "growth measured" if all(controls.values()) else "big model does NOT beat every control"
        reuse = [arm for arm, record in row["arms"].items() if record["reuse_keep_training_small_wins_every_seed"]]
        lines.append(
            f"{row['size']} ({row['big_non_embedding_parameters']:,} non-embedding parameters, "
            f"{row['tokens_per_parameter']:.1f} tokens/parameter, {row['epochs_over_training_split']:.1f} epochs; "
            f"{regime}): saved FLOPs on every seed: {', '.join(helped) or 'none'}; reuse view, keep training the "
            f"small model wins every seed for: {', '.join(reuse) or 'none'}."
        )
    for fit in fits:
        marks = "; ".join(
            f"at {p['non_embedding_parameters']:.2g} our line gives {p['our_fit']['mean']:.0%} "
            f"[{p['our_fit']['low']:.0%}, {p['our_fit']['high']:.0%}] against G_stack's {p['saving']:.0%}: "
            + ("consistent (inside the interval)" if p["consistent"] else "NOT consistent")
            for p in fit["at_gstack_published"]
        )
        lines.append(
            f"Fit of {fit['arm']} ({fit['tokens_per_parameter']:g} tokens/parameter): the FLOPs it needs, as a "
            f"fraction of scratch's, change x{10 ** fit['slope_per_decade']:.2f} per decade of size (95% "
            f"x{10 ** fit['slope_95'][0]:.2f} to x{10 ** fit['slope_95'][1]:.2f}); {marks}."
        )
    return " ".join(lines)


def analyse_scale(studies: list[Study], reports: dict[str, dict]) -> dict:
    """Rows per study, fits of saving against size per arm and budget, and the verdict across sizes."""
    rows = [size_row(study, reports[study.key]) for study in studies]
    fits = []
    for budget in dict.fromkeys(study.tokens_per_parameter for study in studies):
        at_budget = [row for row in rows if row["tokens_per_parameter_target"] == budget]
        for arm in dict.fromkeys(arm for row in at_budget for arm in row["arms"]):
            fit = fit_saving(at_budget, arm)
            if fit is not None:
                fits.append({**fit, "tokens_per_parameter": budget})
    return {"rows": rows, "fits": fits, "verdict": scale_verdict(rows, fits)}


PLOT_FLOOR = -1.0  # fitted intervals below -100% (twice scratch's FLOPs) run off the plot's axes


def plot_scale(scale: dict, path, title: str) -> None:
    """Saving against size, every seed a point (hollow: an upper bound, scratch's loss not reached), each fit
    as a line over the sizes it was fitted on only; at G_stack's published points (the stars) the fit's 95%
    interval there, as a bar beside the star, rather than a line drawn across the decades between."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 5.5))
    colours = {}
    for row in scale["rows"]:
        for arm, record in row["arms"].items():
            key = (arm, row["tokens_per_parameter_target"])
            first = key not in colours
            colour = colours.setdefault(key, plt.cm.tab20(len(colours) % 20))  # up to 20 arms, each its own
            for index, seed in enumerate(record["saving_per_seed"]):
                ax.scatter(
                    row["big_non_embedding_parameters"],
                    seed["saving"],
                    facecolors="none" if seed["upper_bound"] else colour,
                    edgecolors=colour,
                    label=f"{arm}, {key[1]:g} tokens/param (per seed)" if first and index == 0 else None,
                )
    for index, fit in enumerate(scale["fits"]):
        colour = colours[(fit["arm"], fit["tokens_per_parameter"])]
        xs = np.geomspace(*fit["range_non_embedding_parameters"], 20)
        ax.plot(xs, 1 - 10 ** (fit["intercept"] + fit["slope_per_decade"] * np.log10(xs)), c=colour, lw=1)
        for point in fit["at_gstack_published"]:
            line = point["our_fit"]
            ax.errorbar(
                point["non_embedding_parameters"] * 1.05 ** (index + 1),  # side by side, right of the star
                line["mean"],
                yerr=[[line["mean"] - line["low"]], [line["high"] - line["mean"]]],
                c=colour,
                fmt="_",
                lw=1,
                capsize=2,
            )
    for index, point in enumerate(GSTACK_PUBLISHED):
        label = "G_stack published (total-budget view)" if index == 0 else None
        ax.scatter(point["non_embedding_parameters"], point["saving"], marker="*", s=150, c="black", label=label)
    ax.axhline(0, c="black", lw=0.8, ls="--")
    measured = [seed["saving"] for row in scale["rows"] for r in row["arms"].values() for seed in r["saving_per_seed"]]
    ax.set_ylim(min([PLOT_FLOOR + 0.05, *measured]) - 0.05, 1)  # every measured point stays on the axes
    ax.set_xscale("log")
    ax.set_xlabel("non-embedding parameters of the big model")
    ax.set_ylabel("saving: 1 - FLOPs to reach scratch's final loss / scratch's\n(axis cut at -100%: bars run on)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
