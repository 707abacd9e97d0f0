"""Summarize the GPU run: contenders' tokens/s and MFU, the trainer before and after growth, the 3.5B-token projection.

MFU here is 6 x (non-embedding parameters + hidden x vocab) per token, the count the original M1's ~31%
on an A100 used, over the dense bf16 datasheet peak; `matmul.json` gives the rate a plain matmul reaches
on the same machine, the practical ceiling.
"""

import argparse
import json
import statistics
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM

import mtlm_hf  # noqa: F401  (registers the MTLM auto classes)
from mtlm_recipes.flops import flops_per_token

DENSE_BF16_PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0}  # datasheets, dense (no sparsity)
CARD_TOKENS = 3.5e9  # MTLM1-200M's card; the M1 recipe grows at half of it
SETTLE_STEPS = 5  # steps after the start and after growth left out (compilation, re-preparing)


def peak_for(device_name: str) -> float | None:
    return next((tf for gpu, tf in DENSE_BF16_PEAK_TFLOPS.items() if gpu in device_name), None)


def phase(records: list[dict], first: int, last: int, tokens_per_step: int) -> float | None:
    """Median tokens/s over optimizer steps (first, last], or None when the phase is too short."""
    rates = [tokens_per_step / r["seconds"] for r in records if first < r["step"] <= last and r["seconds"] > 0]
    return statistics.median(rates) if rates else None


def flops_before_and_after(final_dir: Path, from_layers: int) -> tuple[int, int]:
    """FLOPs per token of the grown model and of the base it was stacked from (same layers, fewer of them)."""
    config = AutoConfig.from_pretrained(final_dir)
    with torch.device("meta"):
        grown = AutoModelForCausalLM.from_config(config)
    per_layer = sum(p.numel() for p in grown.model.layers[0].parameters())
    grown_flops = flops_per_token(grown)
    return grown_flops - 6 * per_layer * (config.num_hidden_layers - from_layers), grown_flops


def main(args: argparse.Namespace) -> dict:
    versions = json.loads((args.out.parent / "versions.json").read_text())
    peak = peak_for(versions["device"])
    metadata = json.loads((args.run / "training.json").read_text())
    records = [json.loads(line) for line in (args.run / "train_losses.jsonl").read_text().splitlines()]
    growth, per_step, end = metadata["growth"], metadata["tokens_per_step"], records[-1]["step"]
    base_flops, grown_flops = flops_before_and_after(args.run / "final", growth["from_layers"])
    before = phase(records, SETTLE_STEPS, growth["at_step"], per_step)
    after = phase(records, growth["at_step"] + SETTLE_STEPS, end, per_step)
    trainer = {
        "steps": end,
        "tokens_per_step": per_step,
        "growth": growth,
        "before_growth": {"tokens_per_s": before, "mfu": before * base_flops / (peak * 1e12) if peak else None},
        "after_growth": {"tokens_per_s": after, "mfu": after * grown_flops / (peak * 1e12) if peak else None},
        "projected_card_hours": (CARD_TOKENS / 2 / before + CARD_TOKENS / 2 / after) / 3600,
        "first_loss": records[0]["loss"],
        "last_loss": records[-1]["loss"],
    }
    report = {
        "device": versions["device"],
        "versions": versions["packages"],
        "peak_dense_bf16_tflops": peak,
        "matmul": json.loads(args.matmul.read_text()),
        "throughput": json.loads(args.throughput.read_text()),
        "trainer": trainer,
    }
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    for name, part in (("before growth", trainer["before_growth"]), ("after growth", trainer["after_growth"])):
        mfu = f"{part['mfu']:.1%}" if part["mfu"] else "n/a"
        print(f"trainer {name}: {part['tokens_per_s']:,.0f} tokens/s, MFU {mfu}")
    print(f"the card's 3.5B tokens would take {trainer['projected_card_hours']:.1f} h on this device")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--run", type=Path, required=True, help="the trainer's output folder")
    parser.add_argument("--matmul", type=Path, required=True)
    parser.add_argument("--throughput", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    main(parser.parse_args())
