"""Write the MTLM1 / MTLM2 model card (README.md) from measured results.

    python hub_cards/build_card.py m1 MODEL_DIR --repo-id user/MTLM1-200M --training training.json \
        --benchmarks results.json [--perplexity ppl.json] [--out-dir MODEL_DIR]
    python hub_cards/build_card.py m2 MODEL_DIR --repo-id user/MTLM2-40M --training training.json \
        --perplexity ppl.json
    python hub_cards/build_card.py m1 outputs/quickstart/grown_model --repo-id user/mtlm1-quickstart \
        --training outputs/quickstart/training.json --perplexity outputs/quickstart/perplexity.json \
        --comparison outputs/quickstart/results.json        # the card examples/quickstart.py writes

Every number on the card comes from a file: the architecture and parameter count from the model folder
(`config.json`, safetensors headers), benchmark scores from `examples/eval/run_benchmarks.py`'s JSON,
perplexity from `examples/eval/perplexity.py`'s JSON, and tokens, hardware and time from the training metadata
JSON (schema in `hub_cards/README.md`; both trainers write it as `training.json`), and the equal-compute comparison
from the quickstart's `results.json` (`--comparison`). The card's YAML metadata
carries the scores as a model-index (`EvalResult`s), and the loss curve, when the metadata names a loss log, is
drawn to `training_loss.png` beside the card. Nothing else is claimed: none of the original cards' figures
appears unless a result file holds it. The card builder is `mtlm_recipes.cards`; a mistake in what it is given
(a missing file, bad training metadata) is one `error:` line with the fix, exit 2.
"""

import argparse
from pathlib import Path

from mtlm_recipes.cards import FAMILIES, build_card
from mtlm_recipes.errors import report_user_errors


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("family", choices=sorted(FAMILIES))
    parser.add_argument("model_dir", type=Path)
    parser.add_argument("--repo-id", required=True)
    parser.add_argument("--training", type=Path, required=True, help="training metadata JSON")
    parser.add_argument("--benchmarks", type=Path, help="run_benchmarks.py output")
    parser.add_argument("--perplexity", type=Path, help="perplexity.py output")
    parser.add_argument("--comparison", type=Path, help="examples/quickstart.py's results.json")
    parser.add_argument("--model-name", help="the card's title (defaults to the name part of --repo-id)")
    parser.add_argument("--out-dir", type=Path, help="defaults to MODEL_DIR")
    args = parser.parse_args()
    build_card(
        args.family,
        args.model_dir,
        args.repo_id,
        args.training,
        args.benchmarks,
        args.perplexity,
        args.out_dir,
        comparison_path=args.comparison,
        model_name=args.model_name,
    )
    print(f"wrote {(args.out_dir or args.model_dir) / 'README.md'}")


if __name__ == "__main__":
    main()
