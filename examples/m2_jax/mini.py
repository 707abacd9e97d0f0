"""The M2 path of the cards in one command, at CPU size: train in JAX/Flax, export, check parity, evaluate, card.

    python examples/m2_jax/mini.py                        # `make m2-mini`: a few minutes on 2 CPU cores
    python examples/m2_jax/mini.py --total-steps 1000 --output-dir outputs/m2-longer

On the embedded corpus (Shakespeare, examples/data/shakespeare/SOURCES.md; Hamlet and The Tempest held out), it
trains an M2-style MTLM as `examples/m2_jax/train.py` does (config `mini.yaml`), exports it to safetensors through
`mtlm_hf.flax_bridge`, loads the export in PyTorch with trust_remote_code and stops with `ParityError` unless its
logits match the Flax model's within `PARITY_ATOL`, scores the held-out plays by sliding windows (token perplexity
and bits per byte, as the M1 quickstart), and writes under the output directory:
    final/              the model as a trust_remote_code folder (tokenizer, generation config), with its card
                        README.md (model-index metadata) and the loss curve training_loss.png
    results.json        everything the card states, and the parity check, machine, date and command
    train_losses.jsonl, eval_losses.jsonl, training.json, checkpoints/   the training run (see train.py)
Rerunning into the same output directory resumes the finished run: it re-exports and re-evaluates. The pieces are
in `mtlm_recipes/m2_jax/mini.py`.
"""

import argparse
import sys
from pathlib import Path

from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.m2_jax.config import add_run_arguments, run_config_of
from mtlm_recipes.m2_jax.mini import RESULTS_FILE, run_mini

DEFAULT_CONFIG = Path(__file__).with_name("mini.yaml")


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--repo-id", default="your-name/MTLM2-mini", help="the Hub repo the card's snippet loads")
    args = parser.parse_args()
    results = run_mini(run_config_of(args), args.repo_id, command=" ".join(["python", *sys.argv]))
    print(f"wrote {results['output_dir']}/final/ (card README.md, training_loss.png) and {RESULTS_FILE}")


if __name__ == "__main__":
    main()
