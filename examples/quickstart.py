"""Quickstart: train a small MTLM, grow it x2 in depth, train on; compare against the same FLOPs
spent on the big model from scratch and on the small model alone.

    python examples/quickstart.py                  # embedded default: about 6 minutes on 2 CPU cores
    python examples/quickstart.py --scratch-steps 2000 --out outputs/longer

It runs on the embedded corpus (Shakespeare, `examples/data/shakespeare/SOURCES.md`; two whole
plays held out for validation) and writes, under `--out`:
    results.json        every validation point (training FLOPs, loss) and the summary below
    loss_vs_flops.png   validation loss against training FLOPs for the three runs
    grown_model/        the grown model as a trust_remote_code folder, with its tokenizer

FLOPs are counted as 6 * (non-embedding parameters + hidden * vocab) per token (the formula of
../GROWTH_STUDY.md), the small model's FLOPs included in the grown run. Which run wins depends on
the regime (tokens per parameter): the script reports it and says plainly when the small model
alone beats the big one, in which case the comparison does not measure growth. The tokenizer,
packing, FLOP counting and the compute-budgeted training run live in `mtlm_recipes/compute_matched.py`,
shared with the growth benchmark (`benchmarks/growth_speedup.py`: more growth methods, several seeds).
"""

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from growth_ops import GrowthSpec
from mtlm_recipes.compute_matched import (
    ComputeMatchedConfig,
    Growth,
    flop_budget,
    flops_to_reach,
    load_corpus,
    plot_loss_vs_flops,
    train_compute_matched,
)
from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.flops import FLOP_FORMULA


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, value in asdict(ComputeMatchedConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    args = parser.parse_args()
    cfg = ComputeMatchedConfig(**{k: v for k, v in vars(args).items() if k != "out"})
    args.out.mkdir(parents=True, exist_ok=True)

    corpus = load_corpus(cfg)
    tokenizer = corpus.tokenizer
    print(
        f"corpus: {corpus.train.numel():,} training tokens, {corpus.val.numel():,} validation tokens, "
        f"vocab {corpus.vocab_size}"
    )

    big_layers, small_layers = 2 * cfg.small_layers, cfg.small_layers
    budget = flop_budget(cfg, big_layers, corpus.vocab_size)
    scratch, _ = train_compute_matched(f"{big_layers} layers from scratch", cfg, corpus, big_layers, budget)
    control, _ = train_compute_matched(f"{small_layers} layers alone (control)", cfg, corpus, small_layers, budget)
    grown_name = f"{small_layers} -> {big_layers} layers, grown at {cfg.grow_at:.0%}"
    growth = Growth(GrowthSpec(depth=2, depth_method="stack"), at=cfg.grow_at)
    grown, grown_model = train_compute_matched(grown_name, cfg, corpus, small_layers, budget, growth=growth)

    target = scratch["points"][-1]["val_loss"]
    tokens_per_parameter = scratch["tokens"] / scratch["parameters_final"]
    big_beats_small = target < control["points"][-1]["val_loss"]
    regime = f"{tokens_per_parameter:.2f} tokens per parameter (big model); " + (
        "the big model from scratch beats the small control" if big_beats_small else "the small control wins"
    )
    summary = {
        "flop_budget": budget,
        "flop_formula": FLOP_FORMULA,
        "regime_tokens_per_parameter": tokens_per_parameter,
        "big_from_scratch_beats_small_control": big_beats_small,
        "scratch_final_val_loss": target,
        "flops_to_reach_scratch_final_loss": {
            r["name"]: flops_to_reach(r["points"], target) for r in (scratch, control, grown)
        },
        "verdict": (
            "The big model from scratch beats the small model alone here, so the grown run's FLOPs to reach the "
            "scratch loss measure growth."
            if big_beats_small
            else "At this budget the small model alone is the most efficient: the comparison does NOT measure "
            "growth, only the small model's efficiency at few tokens per parameter. Raise --scratch-steps "
            "to look for a regime where the big model wins."
        ),
    }
    (args.out / "results.json").write_text(
        json.dumps({"config": asdict(cfg), "runs": [scratch, control, grown], "summary": summary}, indent=2)
    )
    plot_loss_vs_flops([scratch, control, grown], regime, args.out / "loss_vs_flops.png")

    grown_model.eval().save_pretrained(args.out / "grown_model")
    tokenizer.save_pretrained(args.out / "grown_model")
    prompt = tokenizer("ROMEO:\nWhat light", return_tensors="pt")
    sample = grown_model.generate(**prompt, max_new_tokens=40, do_sample=True, top_k=40, temperature=0.8)

    print(f"\nregime: {regime}")
    print(summary["verdict"])
    for name, flops in summary["flops_to_reach_scratch_final_loss"].items():
        reached = f"{flops:.3g} FLOPs" if flops is not None else "not reached within the budget"
        print(f"  {name:>28} reaches the scratch model's final loss ({target:.3f}) at {reached}")
    print(f"\nwrote {args.out}/results.json, {args.out}/loss_vs_flops.png, {args.out}/grown_model/")
    print("sample from the grown model:\n" + tokenizer.decode(sample[0], skip_special_tokens=True))


if __name__ == "__main__":
    main()
