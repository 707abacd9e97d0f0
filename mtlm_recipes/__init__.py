"""The code the recipes share: the example scripts, the benchmarks and the tests import it from here.

    run_config          one YAML run-config loader for both trainers (unknown keys refused, nearest key named)
    errors              user mistakes as one `error:` line with the fix (`report_user_errors` wraps a `main`)
    packing             one token packer (EOS after each text, full blocks)
    flops               training FLOPs per token (6 N), for budgets and MFU
    checkpoint_config   the architecture record both trainers write into checkpoints, and the check on resume
    training_log        the loss log and the training metadata (`training.json`) both trainers write
    progress            one tqdm bar per run (steps, loss, tokens/s)
    compute_matched     compute-matched training on the embedded corpus (the quickstart and the growth benchmark)
    growth_speedup      the growth benchmark's analysis, plot and verdict
    quickstart          the quickstart's publish check, plain-words comparison, model folder and scoring
    cards               model cards from measured results (`hub_cards/build_card.py`)
    eval                perplexity and the cards' zero-shot benchmarks (`examples/eval/`)
    m1                  the M1 trainer's config, data, checkpoints and distributed setup (`examples/m1/train.py`)
    m2_jax              the M2 trainer in JAX/Flax (`examples/m2_jax/train.py`, `mini.py`); the only part importing JAX

`import mtlm_recipes` imports none of them: each loads when first used (`mtlm_recipes.packing`, or
`from mtlm_recipes.packing import pack_texts`), so the JAX, evaluation and training stacks load only where needed.
"""

import importlib
from types import ModuleType

_SUBMODULES = (
    "cards",
    "checkpoint_config",
    "compute_matched",
    "errors",
    "eval",
    "flops",
    "growth_speedup",
    "m1",
    "m2_jax",
    "packing",
    "progress",
    "quickstart",
    "run_config",
    "training_log",
)

__all__ = list(_SUBMODULES)


def __getattr__(name: str) -> ModuleType:
    if name in _SUBMODULES:
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_SUBMODULES])
