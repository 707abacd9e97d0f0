"""The analysis of the growth benchmark (`benchmarks/growth_speedup.py`): its miniature config, its `--growth`
entries, the per-seed summary of each run, the plot and the verdict in words.

Kept apart from the script so that tests check each piece, and a report JSON can be replotted alone.
"""

import argparse
import statistics
from dataclasses import dataclass
from pathlib import Path

from growth_ops import GrowthSpec

from .compute_matched import ComputeMatchedConfig, Growth, plot_loss_vs_flops

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
    """`"stack@0.4"` -> x2 depth growth by stacking at 40% of the budget, or an error showing the expected form."""
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
    return Growth(GrowthSpec(depth=2, depth_method=method), at=at)


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


def plot_report(report: dict, path: Path) -> None:
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
