"""The MTLM cards' zero-shot benchmarks on a model folder, through lm-evaluation-harness, on local data.

    python examples/eval/run_benchmarks.py MODEL_DIR --data-dir ../shared/data --out results.json
    python examples/eval/run_benchmarks.py MODEL_DIR --data-dir tests/data/eval --out /tmp/r.json --limit 3

One command runs all 13 tasks of the cards (Winogrande, COPA, BoolQ, WSC273, SuperGLUE WSC, TruthfulQA MC1
and MC2, ARC-Easy, ARC-Challenge, OpenBookQA, HellaSwag, AQuA-RAT, CommonsenseQA), zero-shot, with lm-eval's
own task configs and `HFLM(pretrained=MODEL_DIR, trust_remote_code=True)`. The data comes from `--data-dir`,
laid out as the project's evaluation data (its `SOURCES.md` gives each file's origin); `local_tasks.py`
converts each file into the Hub schema lm-eval reads and records how it differs. Nothing touches the network:
the Hub and `datasets` are switched offline before either is imported, and the task YAMLs name local files.

Written beside `--out` (kept for inspection, and usable with `lm_eval --include_path`):
    <out stem>_work/data/*.jsonl   the converted data
    <out stem>_work/tasks/*.yaml   the task configs (each includes lm-eval's built-in config)

The JSON gives, per task: acc (and acc_norm where defined) with standard errors, the number of items scored,
the source file and its sha256, the Hub dataset lm-eval would read, and the deviations from it.
"""

import argparse
import datetime
import json
import os
import platform
import sys
from pathlib import Path

from local_tasks import BENCHMARKS, write_local_task

ALL_TASKS = [benchmark.task for benchmark in BENCHMARKS]


def go_offline() -> None:
    """Make lm-eval, `datasets` and the Hub client read local files only.

    Must run before `datasets` or `huggingface_hub` is imported: both read these switches once, at import.
    """
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"


def check_model_dir(model_dir: Path) -> None:
    """Fail early, naming the fix, when the model folder is not a saved Transformers model."""
    if not (model_dir / "config.json").is_file():
        raise SystemExit(
            f"error: {model_dir} is not a model folder (no config.json). Save one with `model.save_pretrained(dir)` "
            "and `tokenizer.save_pretrained(dir)`, or download it first with `huggingface_hub.snapshot_download`."
        )


def collect_metrics(task_results: dict) -> dict:
    """`{"acc,none": x, "acc_stderr,none": s, ...}` -> `{"acc": x, "acc_stderr": s, ...}` (numbers only)."""
    metrics = {}
    for key, value in task_results.items():
        name, _, _filter = key.partition(",")
        if isinstance(value, (int, float)) and _filter:
            metrics[name] = value
    return metrics


def run(
    model_dir: Path,
    data_dir: Path,
    out: Path,
    tasks: list[str],
    limit: int | None = None,
    batch_size: int = 8,
    device: str = "cpu",
    dtype: str = "auto",
    tokenizer: str | None = None,
) -> dict:
    """Convert the data, run lm-eval on every task, and write the results JSON.

    Args:
        model_dir (`Path`): the model folder.
        data_dir (`Path`): the evaluation data folder.
        out (`Path`): where the JSON goes.
        tasks (`list[str]`): lm-eval task names, a subset of `ALL_TASKS`.
        limit (`int`, *optional*): items per task (the first ones); for smoke runs only.
        batch_size (`int`, *optional*, defaults to 8): HFLM batch size.
        device (`str`, *optional*, defaults to `"cpu"`): torch device.
        dtype (`str`, *optional*, defaults to `"auto"`): the checkpoint's dtype unless given.
        tokenizer (`str`, *optional*): a tokenizer folder, when the model folder has none.

    Returns:
        `dict`: what was written to `out`.
    """
    go_offline()
    import lm_eval  # after go_offline(): lm_eval imports `datasets`, which reads the offline switch once
    import torch
    import transformers
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    work_dir = out.with_name(f"{out.stem}_work")
    by_name = {benchmark.task: benchmark for benchmark in BENCHMARKS}
    provenance = {name: write_local_task(by_name[name], data_dir, work_dir) for name in tasks}

    model = HFLM(
        pretrained=str(model_dir),
        tokenizer=tokenizer,
        trust_remote_code=True,
        batch_size=batch_size,
        device=device,
        dtype=dtype,
    )
    evaluation = lm_eval.simple_evaluate(
        model=model,
        tasks=tasks,
        task_manager=TaskManager(include_path=str(work_dir / "tasks"), include_defaults=False),
        num_fewshot=0,
        limit=limit,
        log_samples=False,
    )
    per_task = {}
    for name in tasks:
        metrics = collect_metrics(evaluation["results"][name])
        per_task[name] = {
            **{key: metrics[key] for key in sorted(metrics)},
            "items": evaluation["n-samples"][name]["effective"],
            **provenance[name],
        }
    hf_tokenizer = model.tokenizer
    report = {
        "model": {
            "path": str(model_dir),
            "model_type": model.model.config.model_type,
            "parameters": sum(p.numel() for p in model.model.parameters()),
            "tokenizer": {
                "name_or_path": hf_tokenizer.name_or_path,
                "class": type(hf_tokenizer).__name__,
                "vocab_size": len(hf_tokenizer),
            },
        },
        "harness": {
            "lm_eval": lm_eval.__version__,
            "transformers": transformers.__version__,
            "torch": torch.__version__,
            "python": platform.python_version(),
            "num_fewshot": 0,
            "limit": limit,
            "batch_size": batch_size,
            "device": device,
            "dtype": dtype,
            "model_dtype": str(model.model.dtype).removeprefix("torch."),
            "command": " ".join(sys.argv),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        },
        "data_dir": str(data_dir),
        "tasks": per_task,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2))
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("model_dir", type=Path, help="a model folder (loaded with trust_remote_code=True)")
    parser.add_argument("--data-dir", type=Path, required=True, help="evaluation data folder (see SOURCES.md)")
    parser.add_argument("--out", type=Path, required=True, help="results JSON")
    parser.add_argument("--tasks", nargs="+", default=ALL_TASKS, choices=ALL_TASKS, metavar="TASK")
    parser.add_argument("--limit", type=int, help="items per task (smoke runs only)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", default="auto")
    parser.add_argument("--tokenizer", help="tokenizer folder, if the model folder has none")
    args = parser.parse_args()
    check_model_dir(args.model_dir)
    report = run(
        args.model_dir,
        args.data_dir,
        args.out,
        args.tasks,
        args.limit,
        args.batch_size,
        args.device,
        args.dtype,
        args.tokenizer,
    )
    for name, result in report["tasks"].items():
        norm = f"  acc_norm {result['acc_norm']:.4f}" if "acc_norm" in result else ""
        print(f"{name:18s} acc {result['acc']:.4f}{norm}  ({result['items']} items)")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
