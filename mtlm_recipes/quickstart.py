"""The pieces of the quickstart (`examples/quickstart.py`): the M1 path of the cards at a miniature size.

Train a small M1-style MTLM, grow it x2 in depth with its optimizer state, train on, evaluate it on held-out
text, write it as a trust_remote_code folder with its card, and publish it; beside it, the same FLOPs spent on
the big model from scratch and on the small model alone, so the card says honestly what growth did. The
training itself is `mtlm_recipes.compute_matched`'s, shared with the growth benchmark.
"""

import datetime
import os
import platform
from pathlib import Path

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerFast

from .compute_matched import Corpus, flops_to_reach
from .eval.perplexity import perplexity_report
from .flops import FLOP_FORMULA

MODEL_FOLDER = "grown_model"
COMPARISON_PLOT = "loss_vs_flops.png"
# The study that finds a regime where the big model beats the small one, and measures growth there.
GROWTH_STUDY = "benchmarks/growth_speedup.py"


def summarize_comparison(scratch: dict, control: dict, grown: dict, budget: float) -> dict:
    """The equal-FLOPs comparison as results.json and the card show it: runs, regime, verdict, in plain words.

    Args:
        scratch (`dict`), control (`dict`), grown (`dict`): Records of `train_compute_matched`: the big
            model from scratch, the small model alone and the grown run, on the same budget.
        budget (`float`): The FLOP budget each run spent.

    Returns:
        `dict`: The comparison (JSON-ready); every number in it is read off the three records.
    """
    target = scratch["points"][-1]["val_loss"]
    tokens_per_parameter = scratch["tokens"] / scratch["parameters_final"]
    big_beats_small = target < control["points"][-1]["val_loss"]
    reach = {r["name"]: flops_to_reach(r["points"], target) for r in (scratch, control, grown)}
    runs = [
        {
            "name": run["name"],
            "layers": run["layers_final"],
            "parameters": run["parameters_final"],
            "tokens": run["tokens"],
            "final_val_loss": run["points"][-1]["val_loss"],
            "flops_to_reach_scratch_final_loss": reach[run["name"]],
        }
        for run in (scratch, control, grown)
    ]
    jump = grown["loss_jump_at_growth"]
    losses = {key: run["final_val_loss"] for key, run in zip(("scratch", "control", "grown"), runs, strict=True)}
    if big_beats_small:
        grown_reach = reach[grown["name"]]
        reached = (
            f"reached the big model's final loss with {grown_reach / budget:.0%} of the budget"
            if grown_reach is not None
            else "did not reach the big model's final loss within the budget"
        )
        verdict = (
            "The big model from scratch beats the small model alone here, so the grown run's FLOPs to reach the "
            "scratch loss measure growth."
        )
        shows = (
            f"At {tokens_per_parameter:.3g} tokens per parameter the big model from scratch ends lower than the small "
            f"model alone ({losses['scratch']:.3f} against {losses['control']:.3f}), so growth is what is measured: the "
            f"grown model {reached}, after a loss jump of {jump:+.3f} nats at growth."
        )
        does_not_show = (
            f"Whether that holds beyond one seed and this miniature size: {GROWTH_STUDY} repeats it over several "
            "seeds and growth methods; nothing here says how a 200M-parameter model would fare."
        )
    else:
        verdict = (
            "At this budget the small model alone is the most efficient: the comparison does NOT measure growth, "
            "only the small model's efficiency at few tokens per parameter. Raise --scratch-steps to look for a "
            "regime where the big model wins."
        )
        shows = (
            "That the path works: the small model was trained, grown to twice its depth with its optimizer state "
            f"carried over, and trained on, learning on after a loss jump of {jump:+.3f} nats at growth. But with "
            f"only {tokens_per_parameter:.3g} training tokens per parameter the big model from scratch does not beat "
            f"the small model alone ({losses['scratch']:.3f} against {losses['control']:.3f}; grown "
            f"{losses['grown']:.3f}): this few tokens cannot use a bigger model's extra layers, so which run ends "
            "lowest says nothing about growth."
        )
        does_not_show = (
            "That growing a model saves compute. Growth can pay only where the big model from scratch beats the "
            "small one, which needs many more tokens per parameter than a few CPU minutes give; "
            f"{GROWTH_STUDY} looks for that regime (several seeds) and measures growth there. One seed at this size "
            "says nothing about larger models."
        )
    return {
        "flop_budget": budget,
        "flop_formula": FLOP_FORMULA,
        "regime_tokens_per_parameter": tokens_per_parameter,
        "big_from_scratch_beats_small_control": big_beats_small,
        "scratch_final_val_loss": target,
        "flops_to_reach_scratch_final_loss": reach,
        "loss_jump_at_growth": jump,
        "runs": runs,
        "verdict": verdict,
        "shows": shows,
        "does_not_show": does_not_show,
        "plot": COMPARISON_PLOT,
    }


def save_model_folder(model: PreTrainedModel, tokenizer: PreTrainedTokenizerFast, folder: Path) -> None:
    """Write the model as a trust_remote_code folder: weights, config, code, tokenizer, generation config."""
    generation = model.generation_config
    # What the quickstart samples with, so `generate()` on the published repo writes the same kind of text.
    generation.do_sample, generation.top_k, generation.temperature, generation.max_new_tokens = True, 40, 0.8, 40
    model.eval().save_pretrained(folder)
    tokenizer.save_pretrained(folder)


def held_out_perplexity(
    model: PreTrainedModel, corpus: Corpus, data_dir: Path, stride: int, max_length: int | None = None
) -> dict:
    """Sliding-window perplexity and bits per byte on the held-out documents, whole, with what was scored.

    Args:
        model (`PreTrainedModel`): The model, in eval mode.
        corpus (`Corpus`): Its tokenizer and the held-out documents.
        data_dir (`Path`): The corpus folder (named in the report).
        stride (`int`): Tokens a window advances.
        max_length (`int`, *optional*): Window length; defaults to the model's context.

    Returns:
        `dict`: `perplexity_report`'s figures, with a `dataset` entry the card names the text by.
    """
    titles = corpus.val_titles or [f"{len(corpus.val_texts)} documents"]
    text = "\n\n".join(corpus.val_texts)
    report = perplexity_report(model, corpus.tokenizer, text, max_length, stride, "this run's byte-level BPE")
    report["dataset"] = {
        "type": Path(data_dir).name,
        "name": f"{' and '.join(titles)} (held out)",
        "config": None,
        "split": "validation",
        "description": f"the held-out works ({', '.join(titles)}; the validation split of {Path(data_dir).name}, "
        "never seen in training), whole, joined by blank lines",
    }
    return report


def describe_machine() -> dict:
    """What the run's time depends on: CPU, cores, torch threads, and the load other work put on them."""
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.is_file() else []  # Linux names the CPU model here
    models = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    cpu = models[0] if models else platform.processor() or platform.machine()
    return {
        "hardware": f"{os.cpu_count()} CPU cores ({cpu}), {torch.get_num_threads()} torch threads",
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "load_average": os.getloadavg(),
        "date": datetime.date.today().isoformat(),
    }
