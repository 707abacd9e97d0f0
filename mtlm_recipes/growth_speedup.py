"""The growth benchmark (`benchmarks/growth_speedup.py`, and per size `benchmarks/growth_scale.py`): its miniature
config, its `--growth` entries, the arms of one study, the per-seed summary of each run, the two ways of
counting (total budget and reuse), the plot and the verdict in words.

Kept apart from the scripts so that tests check each piece, both scripts share it, and a report JSON can be
replotted alone.
"""

import argparse
import statistics
from dataclasses import asdict, dataclass, replace

from growth_ops import GrowthSpec

from .compute_matched import (
    ComputeMatchedConfig,
    Corpus,
    Growth,
    build_model,
    flops_to_reach,
    plot_loss_vs_flops,
    train_compute_matched,
)
from .errors import ConfigError
from .flops import count_non_embedding_parameters, flops_per_token

METHODS = ("stack", "interleave", "identity", "width")
DEFAULT_GROWTH = ("stack@0.2", "stack@0.4", "stack@0.6", "interleave@0.4", "identity@0.4", "width@0.4")
# Symmetry breaking of the width arm (relative to each weight's std; it cancels across the copies, so growth stays
# exact): without it the two copies of every unit get equal gradients and train as one.
WIDTH_NOISE = 0.01

# What the numbers of a report JSON mean (written into it).
DEFINITIONS = {
    "flops_to_reach_scratch_final_loss": "training FLOPs at which the run's validation loss first reaches the "
    "final validation loss of the from-scratch run of the same seed (linear interpolation between "
    "evaluations); null if it never does within the budget",
    "fraction_of_scratch_flops": "flops_to_reach_scratch_final_loss / the same for the from-scratch run; "
    "G_stack's speed-up is 1 / fraction - 1",
    "loss_jump_at_growth": "validation loss just after growth minus just before",
    "reuse": "only the FLOPs after growth count: the grown run's final loss, its control's (keep training the "
    "small model: the same run up to growth) and scratch's curve at the same added FLOPs (not annealed there)",
}


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
    """`"stack@0.4"` -> x2 depth growth by stacking at 40% of the budget (`"width@0.4"`: x2 width), or an error
    showing the expected form."""
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
    if method == "width":
        return Growth(GrowthSpec(width=2, width_noise=WIDTH_NOISE, seed=0), at=at)
    return Growth(GrowthSpec(depth=2, depth_method=method), at=at)


def half_width(cfg: ComputeMatchedConfig) -> ComputeMatchedConfig:
    """The small model of the width arm: half the hidden size, heads and intermediate size (head_dim kept)."""
    halves = {"hidden_size": cfg.hidden_size, "num_attention_heads": cfg.num_attention_heads}
    halves["intermediate_size"] = cfg.intermediate_size
    odd = [f"--{key.replace('_', '-')} {value}" for key, value in halves.items() if value % 2]
    if odd:
        raise ConfigError(
            f"a width arm halves the big model, so {', '.join(odd)} must be even; drop width@ or fix it."
        )
    return replace(cfg, **{key: value // 2 for key, value in halves.items()})


@dataclass(frozen=True)
class Arm:
    """One run of a study, for every seed: the shape it starts from and, for a grown run, its growth and control."""

    kind: str  # "scratch", "control" (a small model alone) or "grown"
    name: str
    cfg: ComputeMatchedConfig  # the shape the run starts from
    layers: int
    growth: Growth | None = None
    control: str | None = None  # name of the control a grown run is judged against (its own small model alone)


def plan_arms(cfg: ComputeMatchedConfig, growths: list[Growth]) -> list[Arm]:
    """Scratch, the depth control, the depth-grown runs, then (with a width arm) its own control and runs."""
    small, big = cfg.small_layers, 2 * cfg.small_layers
    control = Arm("control", f"{small} layers alone (control)", cfg, small)
    arms = [Arm("scratch", f"{big} layers from scratch", cfg, big), control]
    arms += [
        Arm("grown", f"{small} -> {big}, {g.spec.depth_method} at {g.at:.0%}", cfg, small, g, control.name)
        for g in growths
        if not g.spec.grows_width
    ]
    widths = [g for g in growths if g.spec.grows_width]
    if widths:
        narrow = half_width(cfg)
        width_control = Arm(
            "control", f"hidden {narrow.hidden_size} x {big} layers alone (width control)", narrow, big
        )
        arms.append(width_control)
        arms += [
            Arm(
                "grown",
                f"hidden {narrow.hidden_size} -> {cfg.hidden_size}, width at {g.at:.0%}",
                narrow,
                big,
                g,
                width_control.name,
            )
            for g in widths
        ]
    return arms


def spread(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "min": min(values), "max": max(values)}


def loss_at(points: list[dict], flops: float) -> float:
    """Validation loss on a run's curve at `flops` (linear interpolation between evaluations)."""
    for previous, point in zip(points, points[1:], strict=False):
        if point["flops"] >= flops:
            frac = (flops - previous["flops"]) / (point["flops"] - previous["flops"])
            return previous["val_loss"] + frac * (point["val_loss"] - previous["val_loss"])
    return points[-1]["val_loss"]


def judge_against_scratch(seed_runs: dict[str, list[dict]], scratch_name: str) -> None:
    """Add to every seed's run the FLOPs it needs to reach that seed's scratch final loss (same draws, same batches)."""
    for scratch in seed_runs[scratch_name]:
        target = scratch["points"][-1]["val_loss"]
        scratch_flops = flops_to_reach(scratch["points"], target)
        for runs in seed_runs.values():
            run = next(r for r in runs if r["seed"] == scratch["seed"])
            run["scratch_final_val_loss"] = target
            run["flops_to_reach_scratch_final_loss"] = flops_to_reach(run["points"], target)
            reached = run["flops_to_reach_scratch_final_loss"]
            run["fraction_of_scratch_flops"] = None if reached is None else reached / scratch_flops


def reuse_view(grown: dict, scratch: dict, control: dict) -> dict:
    """One seed in the reuse view: the small model is sunk cost, only the FLOPs after growth count.

    The grown run and its control are the same run up to growth (same seed, batches and schedule), so the control
    after that point is "keep training the small model" for exactly the added FLOPs.
    """
    added = grown["points"][-1]["flops"] - grown["grown_at_flops"]
    losses = {
        "grown": grown["points"][-1]["val_loss"],
        "keep_training_small": control["points"][-1]["val_loss"],
        "big_from_scratch": loss_at(scratch["points"], added),
    }
    target = scratch["points"][-1]["val_loss"]
    reached = {
        "grown": grown["flops_to_reach_scratch_final_loss"],
        "keep_training_small": control["flops_to_reach_scratch_final_loss"],
    }
    added_to_reach = {k: None if v is None else v - grown["grown_at_flops"] for k, v in reached.items()}
    return {
        "added_flops": added,
        "val_loss_at_added_flops": losses,
        "best_at_added_flops": min(losses, key=losses.get),
        "added_flops_to_reach_scratch_final_loss": added_to_reach,
        "scratch_flops_to_reach_its_final_loss": flops_to_reach(scratch["points"], target),
    }


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
    if growth is not None and "reuse" in seed_runs[0]:
        reuse = [r["reuse"] for r in seed_runs]
        winners = [r["best_at_added_flops"] for r in reuse]
        summary["reuse"] = {
            "added_flops": spread([r["added_flops"] for r in reuse]),
            "val_loss_at_added_flops": {
                key: spread([r["val_loss_at_added_flops"][key] for r in reuse])
                for key in reuse[0]["val_loss_at_added_flops"]
            },
            "seeds_won_by": {key: winners.count(key) for key in reuse[0]["val_loss_at_added_flops"]},
            "keep_training_small_wins_every_seed": all(w == "keep_training_small" for w in winners),
        }
    return {
        "name": name,
        "kind": kind,
        "growth": growth.to_dict() if growth is not None else None,
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


def plot_report(report: dict, path) -> None:
    """The plot of a report: every run's mean over seeds with its band, and a zoom on the second half."""
    regime = report["regime"]
    target = regime["scratch_final_val_loss"]["mean"]
    plot_loss_vs_flops([band(r) for r in report["runs"]], regime_title(regime), path, target=target, zoom_from=0.5)


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


def reuse_verdict(grown: list[dict]) -> str:
    """The reuse view in words: which of grown, keep training the small model, big from scratch wins per arm."""
    parts = []
    for run in grown:
        won = run["summary"]["reuse"]["seeds_won_by"]
        seeds = sum(won.values())
        best = max(won, key=won.get)
        parts.append(f"{run['name']}: {best.replace('_', ' ')} wins {won[best]}/{seeds} seeds")
    control_wins = [r["name"] for r in grown if r["summary"]["reuse"]["keep_training_small_wins_every_seed"]]
    tail = (
        f" The control (keep training the small model) wins on every seed for: {', '.join(control_wins)}."
        if control_wins
        else " The control (keep training the small model) does not win on every seed for any arm."
    )
    return (
        "Reuse view (only FLOPs after the small model count; lowest loss at equal added FLOPs): "
        + "; ".join(parts)
        + "."
        + tail
    )


def describe_models(arms: list[Arm], vocab_size: int) -> dict:
    """Size of every starting shape and of the big model, for the JSON."""
    shapes = {"small": arms[1], "big": arms[0]}
    width_controls = [arm for arm in arms[2:] if arm.kind == "control"]
    if width_controls:
        shapes["width_small"] = width_controls[0]
    models = {}
    for size, arm in shapes.items():
        model = build_model(arm.cfg, arm.layers, vocab_size)
        models[size] = {
            "layers": arm.layers,
            "hidden_size": arm.cfg.hidden_size,
            "parameters": sum(p.numel() for p in model.parameters()),
            "non_embedding_parameters": count_non_embedding_parameters(model),
            "flops_per_token": flops_per_token(model),
        }
    return models


def study_report(arms: list[Arm], seed_runs: dict[str, list[dict]], corpus: Corpus, budget: float) -> dict:
    """The analysis of one study: every arm summarised, the regime against each control, both views, the verdicts.

    Args:
        arms (`list[Arm]`): From `plan_arms`: scratch first, then the depth control.
        seed_runs (`dict[str, list[dict]]`): Each arm's name -> its runs (`train_compute_matched` records with
            `"seed"`), one per seed, in the same seed order for every arm.
        corpus (`Corpus`): The corpus the runs trained on.
        budget (`float`): The FLOP budget every run spent.

    Returns:
        `dict`: `models`, `regime`, `runs`, `verdict` and `reuse_verdict` of the report JSON.
    """
    scratch_name = arms[0].name
    judge_against_scratch(seed_runs, scratch_name)
    scratch_by_seed = {r["seed"]: r for r in seed_runs[scratch_name]}
    for arm in arms:
        if arm.kind == "grown":
            for run in seed_runs[arm.name]:
                control = next(r for r in seed_runs[arm.control] if r["seed"] == run["seed"])
                run["reuse"] = reuse_view(run, scratch_by_seed[run["seed"]], control)
    runs = [summarize(arm.name, arm.kind, arm.growth, seed_runs[arm.name]) for arm in arms]
    by_name = dict(zip([arm.name for arm in arms], runs, strict=True))

    def beats(control: str) -> bool:
        pairs = zip(by_name[scratch_name]["seeds"], by_name[control]["seeds"], strict=True)
        return all(s["points"][-1]["val_loss"] < c["points"][-1]["val_loss"] for s, c in pairs)

    models = describe_models(arms, corpus.vocab_size)
    tokens = by_name[scratch_name]["seeds"][0]["tokens"]
    tokens_per_parameter = tokens / models["big"]["parameters"]
    controls = [arm.name for arm in arms if arm.kind == "control"]
    regime = {
        "tokens_big_from_scratch": tokens,
        "tokens_per_parameter": tokens_per_parameter,
        "tokens_per_non_embedding_parameter": tokens / models["big"]["non_embedding_parameters"],
        "epochs_over_training_split": tokens / corpus.train.numel(),
        "scratch_final_val_loss": by_name[scratch_name]["summary"]["final_val_loss"],
        "control_final_val_loss": by_name[controls[0]]["summary"]["final_val_loss"],
        "big_from_scratch_beats_small_control": beats(controls[0]),
        "big_from_scratch_beats_each_control": {name: beats(name) for name in controls},
        "rule": "on every seed, the big model from scratch ends with a lower validation loss than the small "
        "model alone (same seed, same FLOP budget); a width arm is judged against its own small model",
    }
    judged = [(c, [by_name[arm.name] for arm in arms if arm.control == c]) for c in controls]
    judged = [(c, grown) for c, grown in judged if grown] or [(controls[0], [])]
    verdicts = [verdict(beats(c), tokens_per_parameter, grown) for c, grown in judged]
    if len(judged) > 1:  # each family of arms against its own small model alone
        verdicts = [f"Against {c}: {text}" for (c, _), text in zip(judged, verdicts, strict=True)]
    grown_runs = [run for run in runs if run["kind"] == "grown"]
    return {
        "models": models,
        "regime": regime,
        "runs": runs,
        "verdict": " ".join(verdicts),
        "reuse_verdict": reuse_verdict(grown_runs) if grown_runs else None,
    }


# What `run_arm` records of a run; the rest of a report's seed record is analysis, redone from these.
TRAINING_RECORD = (
    "name",
    "seed",
    "layers_final",
    "parameters_final",
    "tokens",
    "points",
    "grown_at_flops",
    "grown_at_step",
    "loss_jump_at_growth",
)
PER_RUN_FIELDS = ("seed", "grow_at")  # set per run by the seed and the arm, not part of a study's config


def recorded_runs(
    report: dict, cfg: GrowthSpeedupConfig, budget: float, corpus: Corpus
) -> dict[tuple[str, int], dict]:
    """The training records, by (arm name, seed), of the runs a report made at `cfg` and `budget` on `corpus`.

    Training is deterministic given corpus, config, budget, arm and seed, so these are the runs a new study at
    that config would train: reusing them saves their compute. A report is `benchmarks/growth_speedup.py`'s (one
    study) or `benchmarks/growth_scale.py`'s (`studies`, one per size and budget); a study whose corpus, config
    or budget differs gives nothing. Reports older than `train_sha256` are matched on their token count.
    """
    ours, theirs = corpus.summary(), report.get("corpus", {})
    if any(theirs.get(key, ours[key]) != ours[key] for key in ("train_tokens", "train_sha256", "vocab_size")):
        return {}
    wanted = {key: value for key, value in asdict(cfg).items() if key not in PER_RUN_FIELDS}
    found = {}
    for study in report.get("studies", [report]):
        config = study.get("cfg", study.get("config", {}))
        if study.get("flop_budget") != budget or any(config.get(k, v) != v for k, v in wanted.items()):
            continue
        for run in study["runs"]:
            for record in run["seeds"]:
                found[(run["name"], record["seed"])] = {k: record[k] for k in TRAINING_RECORD if k in record}
    return found


def run_arm(arm: Arm, seed: int, corpus: Corpus, budget: float, device: str = "cpu", bf16: bool = False) -> dict:
    """Train one arm for one seed (`train_compute_matched`) and return its record, named and seeded."""
    cfg = replace(arm.cfg, seed=seed)
    result, _ = train_compute_matched(
        f"{arm.name}, seed {seed}", cfg, corpus, arm.layers, budget, arm.growth, device, bf16
    )
    return {**result, "name": arm.name, "seed": seed}
