"""Quickstart: the M1 path of the cards in a few CPU minutes. Train a small MTLM, grow it x2 in depth with its
optimizer state, train on, evaluate it, write it with its model card, and (with --push-to) publish it; and
check, at equal FLOPs, what growth did against the big model from scratch and the small model alone.

    python examples/quickstart.py                          # embedded default: about 4 minutes on 2 CPU cores
    python examples/quickstart.py --push-to USER/NAME      # the same, then one Hub commit (needs HF_TOKEN)
    python examples/quickstart.py --scratch-steps 2000 --out outputs/longer

It runs on the embedded corpus (Shakespeare, `examples/data/shakespeare/SOURCES.md`; two whole plays held out)
and writes, under `--out`:
    grown_model/        the grown model as a trust_remote_code folder: weights, config, code, tokenizer,
                        generation_config.json, its card README.md (huggingface_hub ModelCard with model-index
                        metadata), training_loss.png (the loss curve, growth step marked) and loss_vs_flops.png
    results.json        every run's validation points, the comparison and its verdict, the held-out perplexity
                        and bits per byte, the training metadata, the machine, the date and the command
    training.json, train_losses.jsonl, perplexity.json      what the card was filled from

The grown run is the M1 path: `growth_ops.GrowthSpec(depth=2, depth_method="stack")` at `--grow-at` of the
budget, the optimizer's state carried by growth_ops' training-state growth (`TrainingGrowth`), not a fresh one.
FLOPs are counted as 6 * (non-embedding parameters + hidden * vocab) per token, the small model's FLOPs included.
Which run wins depends on the regime (tokens per parameter): the script and the card say plainly when the small
model alone beats the big one, in which case the comparison does not measure growth. With --push-to the token
and the Hub are checked before anything trains. The pieces are `mtlm_recipes/compute_matched.py` (shared with
`benchmarks/growth_speedup.py`) and `mtlm_recipes/quickstart.py`.
"""

import argparse
import json
import shlex
import sys
import time
from dataclasses import asdict
from pathlib import Path

from growth_ops import GrowthSpec
from mtlm_hf import PublishError, check_can_publish, publish
from mtlm_recipes.cards import build_card
from mtlm_recipes.compute_matched import (
    DATA_DIR,
    ComputeMatchedConfig,
    Growth,
    flop_budget,
    load_corpus,
    plot_loss_vs_flops,
    train_compute_matched,
)
from mtlm_recipes.errors import USAGE_ERROR_STATUS, report_user_errors
from mtlm_recipes.quickstart import (
    COMPARISON_PLOT,
    MODEL_FOLDER,
    describe_machine,
    held_out_perplexity,
    save_model_folder,
    summarize_comparison,
)
from mtlm_recipes.training_log import LOSS_LOG, METADATA_FILE, write_training_metadata

CARD_NAME = "mtlm1-quickstart"


def run(args: argparse.Namespace, cfg: ComputeMatchedConfig) -> None:
    start, machine = time.time(), describe_machine()
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    (out / LOSS_LOG).unlink(missing_ok=True)  # the loss log is appended to, step by step
    corpus = load_corpus(cfg, args.data_dir)
    tokenizer = corpus.tokenizer
    print(
        f"corpus: {corpus.train.numel():,} training tokens, {corpus.val.numel():,} validation tokens, "
        f"vocab {corpus.vocab_size}"
    )

    big_layers, small_layers = 2 * cfg.small_layers, cfg.small_layers
    budget = flop_budget(cfg, big_layers, corpus.vocab_size)
    scratch, _ = train_compute_matched(f"{big_layers} layers from scratch", cfg, corpus, big_layers, budget)
    control, _ = train_compute_matched(f"{small_layers} layers alone (control)", cfg, corpus, small_layers, budget)
    grown_name = f"{small_layers} -> {big_layers} layers, grown at {cfg.grow_at:.0%} (this model)"
    # Growth #: stacked x2, the optimizer's moments carried to the new layers (growth_ops.midrun.TrainingGrowth).
    growth = Growth(GrowthSpec(depth=2, depth_method="stack"), at=cfg.grow_at, optimizer="copy")
    grown, model = train_compute_matched(grown_name, cfg, corpus, small_layers, budget, growth=growth, log_dir=out)
    summary = summarize_comparison(scratch, control, grown, budget)

    folder = out / MODEL_FOLDER
    save_model_folder(model, tokenizer, folder)
    regime = f"{summary['regime_tokens_per_parameter']:.2f} tokens per parameter (big model); " + (
        "the big model from scratch beats the small control"
        if summary["big_from_scratch_beats_small_control"]
        else "the small control wins"
    )
    plot_loss_vs_flops([scratch, control, grown], regime, folder / COMPARISON_PLOT)
    perplexity = held_out_perplexity(model, corpus, args.data_dir, stride=args.ppl_stride)
    (out / "perplexity.json").write_text(json.dumps(perplexity, indent=2) + "\n")
    command = shlex.join(["python", "examples/quickstart.py", *sys.argv[1:]])
    training = write_training_metadata(
        out,
        tokens_per_step=cfg.batch_size * cfg.seq_len,
        hardware=machine["hardware"],
        framework="PyTorch " + machine["torch"],
        precision="fp32",
        command=command,
        growth={
            "at_step": grown["grown_at_step"],
            "from_layers": small_layers,
            "to_layers": big_layers,
            "method": growth.spec.depth_method,
        },
    )
    training |= {
        "date": machine["date"],
        "data_description": f"{corpus.train.numel():,} tokens of {args.data_dir.name}'s training split",
    }
    (out / METADATA_FILE).write_text(json.dumps(training, indent=2) + "\n")
    results = {
        "config": asdict(cfg),
        "runs": [scratch, control, grown],
        "summary": summary,
        "perplexity": {k: perplexity[k] for k in ("token_perplexity", "bits_per_byte", "word_perplexity")},
        "training": training,
        "growth": growth.to_dict(),
        "machine": {**machine, "load_average_end": describe_machine()["load_average"]},
        "command": command,
        "wall_time_s": time.time() - start,
    }
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    repo_id = args.push_to or str(folder)
    build_card(
        "m1",
        folder,
        repo_id,
        out / METADATA_FILE,
        perplexity_path=out / "perplexity.json",
        comparison_path=out / "results.json",
        model_name=args.push_to.split("/")[-1] if args.push_to else CARD_NAME,
    )

    print(f"\nregime: {regime}")
    print(summary["verdict"])
    target = summary["scratch_final_val_loss"]
    for name, flops in summary["flops_to_reach_scratch_final_loss"].items():
        reached = f"{flops:.3g} FLOPs" if flops is not None else "not reached within the budget"
        print(f"  {name:>44} reaches the scratch model's final loss ({target:.3f}) at {reached}")
    print(
        f"held-out plays: token perplexity {perplexity['token_perplexity']:.2f}, "
        f"bits per byte {perplexity['bits_per_byte']:.4f}"
    )
    print(f"\nwrote {out}/results.json and {folder}/ (model, tokenizer, card README.md, plots)")
    if args.push_to:
        commit = publish(folder, args.push_to, endpoint=args.endpoint)
        print(f"published {args.push_to} in one commit: {commit.commit_url}")
    prompt = tokenizer("ROMEO:\nWhat light", return_tensors="pt")
    sample = model.generate(**prompt)  # sampling settings of the saved generation_config.json
    print("sample from the grown model:\n" + tokenizer.decode(sample[0], skip_special_tokens=True))


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field, value in asdict(ComputeMatchedConfig()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", type=type(value), default=value)
    parser.add_argument("--ppl-stride", type=int, default=64, help="sliding-window stride of the held-out perplexity")
    parser.add_argument("--data-dir", type=Path, default=DATA_DIR, help="train.jsonl.gz + validation.jsonl.gz")
    parser.add_argument("--out", type=Path, default=Path("outputs/quickstart"))
    parser.add_argument("--push-to", metavar="USER/NAME", help="publish the grown model's folder to this Hub repo")
    parser.add_argument("--endpoint", help="Hub URL for --push-to (default: HF_ENDPOINT or https://huggingface.co)")
    args = parser.parse_args()
    own = {"ppl_stride", "data_dir", "out", "push_to", "endpoint"}
    cfg = ComputeMatchedConfig(**{k: v for k, v in vars(args).items() if k not in own})
    try:
        if args.push_to:
            check_can_publish(args.push_to, endpoint=args.endpoint)  # before anything trains
        run(args, cfg)
    except PublishError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)  # one line, as mtlm-publish prints it
        raise SystemExit(USAGE_ERROR_STATUS) from None


if __name__ == "__main__":
    main()
