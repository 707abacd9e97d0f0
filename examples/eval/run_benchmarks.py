"""The MTLM cards' zero-shot benchmarks on a model folder, through lm-evaluation-harness, on local data.

    python examples/eval/run_benchmarks.py MODEL_DIR --data-dir ../shared/data --out results.json
    python examples/eval/run_benchmarks.py MODEL_DIR --data-dir tests/data/eval --out /tmp/r.json --limit 3

One command runs all 13 tasks of the cards (Winogrande, COPA, BoolQ, WSC273, SuperGLUE WSC, TruthfulQA MC1
and MC2, ARC-Easy, ARC-Challenge, OpenBookQA, HellaSwag, AQuA-RAT, CommonsenseQA), zero-shot, with lm-eval's
own task configs and `HFLM(pretrained=MODEL_DIR, trust_remote_code=True)`. The data comes from `--data-dir`,
laid out as the project's evaluation data (its `SOURCES.md` gives each file's origin); `mtlm_recipes.eval.local_tasks`
converts each file into the Hub schema lm-eval reads and records how it differs. Nothing touches the network:
the Hub and `datasets` are switched offline before either is imported, and the task YAMLs name local files.

Written beside `--out` (kept for inspection, and usable with `lm_eval --include_path`):
    <out stem>_work/data/*.jsonl   the converted data
    <out stem>_work/tasks/*.yaml   the task configs (each includes lm-eval's built-in config)

The JSON gives, per task: acc (and acc_norm where defined) with standard errors, the number of items scored,
the source file and its sha256, the Hub dataset lm-eval would read, and the deviations from it.
"""

import argparse
from pathlib import Path

from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.eval.benchmarks import ALL_TASKS, run
from mtlm_recipes.eval.model_folder import check_model_folder


@report_user_errors
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
    check_model_folder(args.model_dir, args.tokenizer)
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
