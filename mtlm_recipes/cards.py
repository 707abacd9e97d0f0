"""Model cards for MTLM1 / MTLM2 from measured results (`hub_cards/build_card.py` is the command line).

Every number on the card comes from a file: the architecture and parameter count from the model folder
(`config.json`, safetensors headers), benchmark scores from `mtlm_recipes.eval.benchmarks`' JSON, perplexity
from `mtlm_recipes.eval.perplexity`'s JSON, tokens, hardware and time from the training metadata JSON
(schema in `hub_cards/README.md`; both trainers write it as `training.json`), and an equal-compute comparison
from the quickstart's `results.json`. The templates are `hub_cards/templates/` (Jinja2, rendered by
`huggingface_hub.ModelCard.from_template`).
"""

import json
import math
from pathlib import Path

from huggingface_hub import EvalResult, ModelCard, ModelCardData
from safetensors import safe_open

from .errors import ConfigError, InputFileError

# A card is its family's template (metadata, title, summary) followed by the sections both families share.
# The templates of the checkout (the recipes run from a clone of the repository).
TEMPLATES = Path(__file__).resolve().parents[1] / "hub_cards" / "templates"
FAMILIES = {"m1": "MTLM1", "m2": "MTLM2"}
# The published originals whose cards carry claims that do not hold (../shared/ORIGINALS.md); a card names
# its original only to say what this run measured instead.
ORIGINAL_MODELS = {"m1": "MTLM1-200M", "m2": "MTLM2-40M"}
LOSS_PLOT = "training_loss.png"
# Where a perplexity JSON does not say what text it scored: the cards' own evaluation, WikiText-2.
WIKITEXT2 = {
    "type": "wikitext",
    "name": "WikiText-2 (raw)",
    "config": "wikitext-2-raw-v1",
    "split": "test",
    "description": "the raw WikiText-2 test text",
}

# The training metadata JSON: field -> (type, required, meaning). hub_cards/README.md documents the same fields.
TRAINING_FIELDS: dict[str, tuple[type | tuple[type, ...], bool, str]] = {
    "tokens_trained": (int, True, "training tokens processed, all phases"),
    "hardware": (str, True, "accelerators used, e.g. '1x NVIDIA A100-40GB'"),
    "training_time_hours": ((int, float), True, "wall-clock hours of training"),
    "framework": (str, False, "e.g. 'PyTorch + Accelerate' or 'JAX/Flax'"),
    "precision": (str, False, "e.g. 'bf16 autocast'"),
    "steps": (int, False, "optimizer steps"),
    "tokens_per_step": (int, False, "global batch in tokens"),
    "datasets": (list, False, "Hub ids of the training datasets (card metadata)"),
    "data_description": (str, False, "free text on the data mix"),
    "growth": (dict, False, "{at_step, from_layers, to_layers, method} when the model was grown"),
    "loss_log": (str, False, "JSON lines of {step, loss}, relative to the metadata file"),
    "command": (str, False, "the command that ran the training"),
    "date": (str, False, "when the run finished, ISO 8601 (e.g. '2026-12-02')"),
}

# How each lm-eval task is shown; TruthfulQA's two tasks share one dataset, so their metric types differ.
TASK_DISPLAY = {
    "winogrande": "Winogrande",
    "copa": "COPA",
    "boolq": "BoolQ",
    "wsc273": "Winograd (WSC273)",
    "wsc": "Winograd (SuperGLUE WSC)",
    "truthfulqa_mc1": "TruthfulQA (MC1)",
    "truthfulqa_mc2": "TruthfulQA (MC2)",
    "arc_easy": "ARC-Easy",
    "arc_challenge": "ARC-Challenge",
    "openbookqa": "OpenBookQA",
    "hellaswag": "HellaSwag",
    "agieval_aqua_rat": "AQuA-RAT (AGIEval)",
    "commonsense_qa": "CommonsenseQA",
}
METRIC_NAMES = {"acc": "accuracy", "acc_norm": "accuracy (length-normalized)"}
MC2_NAME = "MC2 (probability mass on the true answers)"


def metric_type(task: str, metric: str) -> str:
    """The model-index metric type of one lm-eval metric (`mc1`, `mc1_acc_norm`, `mc2` for TruthfulQA)."""
    if task.startswith("truthfulqa_"):
        variant = task.removeprefix("truthfulqa_")
        return variant if metric == "acc" else f"{variant}_{metric}"
    return metric


def read_json(path: Path, what: str) -> dict:
    """The JSON object in `path`, or an error naming the file and what it should be."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"no {what} at {path}.")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ConfigError(f"{path} is not JSON ({error}); give the {what}.") from error


def load_training_metadata(path: Path) -> dict:
    """Read and check the training metadata JSON against `TRAINING_FIELDS`.

    Args:
        path (`Path`): the JSON file.

    Returns:
        `dict`: the metadata.

    Raises:
        InputFileError: if the file does not exist.
        ConfigError: naming every missing, unknown or mistyped field.
    """
    metadata = read_json(path, "training metadata")
    problems = [f"unknown field {key!r}" for key in metadata if key not in TRAINING_FIELDS]
    for key, (kind, required, meaning) in TRAINING_FIELDS.items():
        if key not in metadata:
            if required:
                problems.append(f"missing {key!r} ({meaning})")
        elif not isinstance(metadata[key], kind) or isinstance(metadata[key], bool):
            problems.append(f"{key!r} must be {getattr(kind, '__name__', 'a number')}, got {metadata[key]!r}")
    for key in ("tokens_trained", "training_time_hours"):
        if isinstance(metadata.get(key), (int, float)) and metadata[key] <= 0:
            problems.append(f"{key!r} must be positive, got {metadata[key]}")
    if problems:
        raise ConfigError(f"{path}: " + "; ".join(problems) + ". See hub_cards/README.md for the schema.")
    return metadata


def count_parameters(model_dir: Path) -> int:
    """Parameters stored in the folder's safetensors files, read from their headers (tied weights count once)."""
    total = 0
    for path in sorted(model_dir.glob("*.safetensors")):
        with safe_open(path, framework="pt") as weights:
            total += sum(math.prod(weights.get_slice(name).get_shape()) for name in weights.keys())
    if total == 0:
        raise InputFileError(f"{model_dir} has no safetensors weights: save the model with `save_pretrained` first.")
    return total


def format_count(count: int) -> str:
    """194_459_392 -> "194.5M"; counts under a million are written out in full."""
    return f"{count / 1e6:.1f}M" if count >= 1e6 else f"{count:,}"


def format_duration(hours: float) -> str:
    """Wall-clock time in the unit a reader thinks in: 0.0142 -> "51 s", 0.0972 -> "5.8 min", 3.52 -> "3.5 hours"."""
    seconds = hours * 3600
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.1f} min"
    return f"{hours:.1f} hours"


def describe_architecture(config: dict) -> str:
    """One line on the architecture, from `config.json` alone."""
    positions = "RoPE" if config.get("position_embedding_type", "rope") == "rope" else "learned absolute positions"
    act = config.get("hidden_act", "silu")
    mlp = f"gated {act} MLP" if config.get("mlp_type", "gated") == "gated" else f"{act} MLP (not gated)"
    biases = "with" if config.get("attention_bias") or config.get("mlp_bias") else "no"
    head = "tied" if config.get("tie_word_embeddings") else "untied"
    return (
        f"decoder-only Transformer, {config['num_hidden_layers']} layers, hidden size {config['hidden_size']}, "
        f"{config['num_attention_heads']} attention heads ({config.get('num_key_value_heads')} key/value heads), "
        f"{positions}, {mlp} of width {config['intermediate_size']}, RMSNorm, {biases} biases, {head} output "
        f"embedding, vocabulary {config['vocab_size']}, context {config['max_position_embeddings']} tokens"
    )


def benchmark_results(benchmarks: dict) -> tuple[list[EvalResult], list[dict]]:
    """EvalResults and table rows from run_benchmarks' JSON, values copied as they are."""
    harness = f"lm-evaluation-harness {benchmarks['harness']['lm_eval']}, 0-shot"
    results, rows = [], []
    for task, result in benchmarks["tasks"].items():
        hub = result["hub_dataset"]
        for metric in ("acc", "acc_norm"):
            if metric not in result:
                continue
            results.append(
                EvalResult(
                    task_type="text-generation",
                    task_name="Zero-shot multiple choice",
                    dataset_type=hub["path"],
                    # TruthfulQA MC1 and MC2 share one dataset entry of the model-index.
                    dataset_name="TruthfulQA" if task.startswith("truthfulqa_") else TASK_DISPLAY.get(task, task),
                    dataset_config=hub.get("name"),
                    dataset_split=hub["split"],
                    metric_type=metric_type(task, metric),
                    metric_name=MC2_NAME if task == "truthfulqa_mc2" else METRIC_NAMES[metric],
                    metric_value=result[metric],
                    metric_config=harness,
                    verified=False,
                )
            )
        rows.append(
            {
                "name": TASK_DISPLAY.get(task, task),
                "task": task,
                "acc": result["acc"],
                "acc_stderr": result.get("acc_stderr"),
                "acc_norm": result.get("acc_norm"),
                "n_items": result["items"],
                "deviations": result["deviations"],
                "prompts_identical": result["prompts_identical"],
            }
        )
    return results, rows


def perplexity_dataset(perplexity: dict) -> dict:
    """What the perplexity JSON scored (its `dataset` entry: type, name, config, split, description); WikiText-2 if unsaid."""
    return {**WIKITEXT2, **perplexity["dataset"]} if "dataset" in perplexity else WIKITEXT2


def perplexity_results(perplexity: dict) -> list[EvalResult]:
    """EvalResults for token perplexity, bits per byte and word perplexity, values copied as they are."""
    dataset = perplexity_dataset(perplexity)
    tokenizer = perplexity["tokenizer"]["name"]
    config = f"sliding window {perplexity['max_length']}, stride {perplexity['stride']}"
    names = {
        "token_perplexity": f"token perplexity ({tokenizer} tokenizer)",
        "bits_per_byte": "bits per byte",
        "word_perplexity": "word perplexity",
    }
    return [
        EvalResult(
            task_type="text-generation",
            task_name="Language modeling",
            dataset_type=dataset["type"],
            dataset_name=dataset["name"],
            dataset_config=dataset["config"],
            dataset_split=dataset["split"],
            metric_type=key,
            metric_name=name,
            metric_value=perplexity[key],
            metric_config=config,
            verified=False,
        )
        for key, name in names.items()
    ]


def plot_loss(loss_log: Path, growth: dict | None, out: Path) -> None:
    """Draw the training loss against steps, with the growth step marked, to a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    points = [json.loads(line) for line in loss_log.read_text().splitlines() if line.strip()]
    fig, ax = plt.subplots(figsize=(7, 4))
    ax.plot([p["step"] for p in points], [p["loss"] for p in points], linewidth=1)
    if growth and "at_step" in growth:
        ax.axvline(growth["at_step"], color="gray", linestyle="--", label=f"grown at step {growth['at_step']}")
        ax.legend()
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("training loss (nats/token)")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    plt.close(fig)


def measured_and_not(family: str, benchmarks: dict | None, perplexity: dict | None, comparison: dict | None) -> dict:
    """What this card's run measured, and what the original model's card states that it did not measure."""
    measured = ["the parameters and architecture (from the weights and config.json)", "the training run (below)"]
    not_measured = []
    if benchmarks:
        measured.append(f"zero-shot accuracy on {len(benchmarks['tasks'])} benchmarks")
    else:
        not_measured.append("zero-shot benchmarks")
    dataset = perplexity_dataset(perplexity) if perplexity else None
    if dataset:
        measured.append(f"token perplexity and bits per byte on {dataset['description']}")
    if dataset is None or dataset["type"] != WIKITEXT2["type"]:
        not_measured.append("WikiText-2 perplexity")
    if comparison:
        measured.append("an equal-compute comparison with the big model from scratch and the small model alone")
    not_measured.append(f"the original {ORIGINAL_MODELS[family]} itself: none of its card's figures is repeated here")
    return {"original": ORIGINAL_MODELS[family], "measured": measured, "not_measured": not_measured}


def build_card(
    family: str,
    model_dir: Path,
    repo_id: str,
    training_path: Path,
    benchmarks_path: Path | None = None,
    perplexity_path: Path | None = None,
    out_dir: Path | None = None,
    comparison_path: Path | None = None,
    model_name: str | None = None,
) -> ModelCard:
    """Fill the family's template and write `README.md` (and the loss plot) into `out_dir`.

    Args:
        family (`str`): `"m1"` or `"m2"`.
        model_dir (`Path`): the saved model folder (architecture and parameter count are read from it).
        repo_id (`str`): the Hub repo the card's usage snippet loads.
        training_path (`Path`): the training metadata JSON.
        benchmarks_path (`Path`, *optional*): run_benchmarks.py's JSON.
        perplexity_path (`Path`, *optional*): perplexity.py's JSON.
        out_dir (`Path`, *optional*): where README.md goes; defaults to `model_dir`.
        comparison_path (`Path`, *optional*): a results JSON with a `summary` entry (the quickstart's
            `results.json`): the runs at equal FLOPs, the regime and the verdict, and the plot beside the card.
        model_name (`str`, *optional*): the card's title; defaults to the name part of `repo_id`.

    Returns:
        `ModelCard`: the card written.

    Raises:
        ConfigError: unknown family, no result file given, or bad training metadata.
        InputFileError: a file or the model folder is missing.
    """
    if family not in FAMILIES:
        raise ConfigError(f"family must be one of {sorted(FAMILIES)}, got {family!r}.")
    if benchmarks_path is None and perplexity_path is None:
        raise ConfigError("A card states measured results: give --benchmarks and/or --perplexity.")
    config = read_json(Path(model_dir) / "config.json", "model config (the model folder, saved by save_pretrained)")
    training = load_training_metadata(training_path)
    benchmarks = read_json(benchmarks_path, "benchmark results (run_benchmarks.py --out)") if benchmarks_path else None
    perplexity = read_json(perplexity_path, "perplexity results (perplexity.py --out)") if perplexity_path else None
    comparison = None
    if comparison_path:
        results = read_json(comparison_path, "quickstart results (examples/quickstart.py's results.json)")
        if "summary" not in results:
            raise ConfigError(f"{comparison_path} has no 'summary' entry: give examples/quickstart.py's results.json.")
        comparison = results["summary"]
    out_dir = out_dir or model_dir
    out_dir.mkdir(parents=True, exist_ok=True)

    eval_results, rows = benchmark_results(benchmarks) if benchmarks else ([], [])
    if perplexity:
        eval_results += perplexity_results(perplexity)
    loss_plot = None
    if training.get("loss_log"):
        plot_loss(training_path.parent / training["loss_log"], training.get("growth"), out_dir / LOSS_PLOT)
        loss_plot = LOSS_PLOT

    model_name = model_name or repo_id.split("/")[-1]
    card_data = ModelCardData(
        language="en",
        license="mit",
        library_name="transformers",
        pipeline_tag="text-generation",
        tags=["mtlm", "custom_code", "text-generation"],
        datasets=training.get("datasets"),
        model_name=model_name,
        eval_results=eval_results or None,
    )
    card = ModelCard.from_template(
        card_data,
        template_str=(TEMPLATES / f"{family}.md").read_text() + (TEMPLATES / "sections.md").read_text(),
        family=FAMILIES[family],
        model_name=model_name,
        repo_id=repo_id,
        parameters=format_count(count_parameters(model_dir)),
        training_time=format_duration(training["training_time_hours"]),
        architecture=describe_architecture(config),
        training=training,
        benchmarks=benchmarks,
        rows=rows,
        perplexity=perplexity,
        perplexity_dataset=perplexity_dataset(perplexity) if perplexity else None,
        comparison=comparison,
        loss_plot=loss_plot,
        provenance=measured_and_not(family, benchmarks, perplexity, comparison),
    )
    card.save(out_dir / "README.md")
    return card
