"""The MTLM cards' zero-shot benchmarks on a model folder, through lm-evaluation-harness, on local data
(`examples/eval/run_benchmarks.py` is the command line; its docstring says what is run and written).

lm-eval, `datasets` and the Hub client are imported inside `run`, after `go_offline`: both read their offline
switches once, at import.
"""

import datetime
import json
import os
import platform
import sys
from pathlib import Path

from .local_tasks import BENCHMARKS, write_local_task

ALL_TASKS = [benchmark.task for benchmark in BENCHMARKS]


def go_offline() -> None:
    """Make lm-eval, `datasets` and the Hub client read local files only.

    Must run before `datasets` or `huggingface_hub` is imported: both read these switches once, at import.
    """
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE"):
        os.environ[name] = "1"


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
