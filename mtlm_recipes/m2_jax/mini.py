"""The M2 path of the cards in one run (`examples/m2_jax/mini.py`, `make m2-mini`), at CPU size.

Train an M2-style MTLM in JAX/Flax (`mtlm_recipes.m2_jax.trainer`), export it to safetensors as a trust_remote_code
folder (`mtlm_hf.flax_bridge`, inside the trainer), check that PyTorch computes the logits the Flax model computes,
score the held-out text by sliding windows (token perplexity and bits per byte, `mtlm_recipes.eval.perplexity`, as
the M1 quickstart does), and write the model card (`mtlm_recipes.cards.build_card`) and `results.json` (the card's
figures, the parity check, machine, date and command) from what the run measured.
"""

import dataclasses
import json
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from flax import nnx
from huggingface_hub import ModelCard
from transformers import AutoModelForCausalLM, AutoTokenizer

from ..cards import build_card, load_training_metadata
from ..eval.perplexity import perplexity_report
from ..training_log import METADATA_FILE
from .config import RunConfig, TextFile, model_config_of
from .corpus import read_documents
from .modeling_flax import FlaxMTLMForCausalLM
from .trainer import train

RESULTS_FILE = "results.json"
PERPLEXITY_FILE = "perplexity.json"
# Both sides compute in float32 on the same weights; what differs is only the order of the floating-point
# operations (XLA's against torch's kernels), which moves logits of a few units by about 1e-6. A wrong weight
# mapping moves them by whole units, so 1e-4 separates the two by two orders of magnitude either way.
PARITY_ATOL = 1e-4
PARITY_BLOCKS = 4  # held-out blocks of seq_len tokens compared
# The embedded corpus's held-out split (examples/data/shakespeare/SOURCES.md), as the model-index names it.
EMBEDDED_HELDOUT_FILE = Path(__file__).resolve().parents[2] / "examples/data/shakespeare/validation.jsonl.gz"
NO_CONFIG = {"config": None, "split": "validation"}
EMBEDDED_HELDOUT = {
    "type": "open-shakespeare",
    "name": "Shakespeare: Hamlet and The Tempest (held out from training)",
    "description": "two whole plays held out from training (Hamlet, The Tempest), as raw text",
    **NO_CONFIG,
}


class ParityError(RuntimeError):
    """The exported PyTorch model does not compute the trained Flax model's logits: a bug in the export."""


def heldout_text(sources: list[TextFile]) -> str:
    """The held-out documents as one text, joined by blank lines (as the perplexity guide joins WikiText-2)."""
    return "\n\n".join(document for source in sources for document in read_documents(source))


def trained_flax_model(state: nnx.State, run: RunConfig) -> FlaxMTLMForCausalLM:
    """The model of the trainer's final state, computing in float32 whatever the training precision."""
    config = model_config_of(run.model, run.data.bpe_vocab_size)
    model = FlaxMTLMForCausalLM(config, rngs=nnx.Rngs(params=0))
    nnx.update(model, state[0])  # the train state is (model, optimizer)
    return model


def check_logit_parity(flax_model: FlaxMTLMForCausalLM, model: torch.nn.Module, input_ids: np.ndarray) -> dict:
    """Compare the Flax model's and the exported PyTorch model's logits on `input_ids` (batch, seq).

    Returns:
        `dict`: `max_abs_diff`, `tolerance`, `logit_scale` (the largest absolute logit) and `tokens` compared.

    Raises:
        ParityError: If any logit differs by more than `PARITY_ATOL`.
    """
    expected = np.asarray(flax_model(input_ids))
    with torch.no_grad():
        actual = model(torch.from_numpy(input_ids).long()).logits.float().numpy()
    parity = {
        "max_abs_diff": float(np.max(np.abs(actual - expected))),
        "tolerance": PARITY_ATOL,
        "logit_scale": float(np.max(np.abs(expected))),
        "tokens": int(input_ids.size),
    }
    if not parity["max_abs_diff"] <= PARITY_ATOL:
        raise ParityError(
            f"The exported PyTorch model's logits differ from the trained Flax model's by up to "
            f"{parity['max_abs_diff']:.3g} (tolerance {PARITY_ATOL:g}, logits up to {parity['logit_scale']:.3g}): "
            "mtlm_hf.flax_bridge mapped a weight wrongly, or modeling_flax.py and modeling_mtlm.py compute "
            "differently. Nothing was evaluated; the card was not written."
        )
    return parity


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def machine() -> dict:
    """The machine the run measured its times on."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine()}


def describe_heldout(sources: list[TextFile]) -> dict:
    """What the scored text is, as `mtlm_recipes.cards` reads it from the perplexity JSON's `dataset` entry."""
    paths = [Path(source.path).resolve() for source in sources]
    if paths == [EMBEDDED_HELDOUT_FILE]:
        return dict(EMBEDDED_HELDOUT)
    names = ", ".join(map(str, paths))
    return {"type": "text", "name": f"held-out text ({names})", "description": f"the text of {names}", **NO_CONFIG}


def write_card(output_dir: Path, perplexity: dict, repo_id: str, date: str) -> ModelCard:
    """The card in `output_dir/final/README.md` by `mtlm_recipes.cards.build_card`, from the run's files (the
    training metadata, given the date the run finished, and the perplexity JSON, written here)."""
    training_path = output_dir / METADATA_FILE
    training_path.write_text(json.dumps({**load_training_metadata(training_path), "date": date}, indent=2) + "\n")
    perplexity_path = output_dir / PERPLEXITY_FILE
    perplexity_path.write_text(json.dumps(perplexity, indent=2) + "\n")
    return build_card("m2", output_dir / "final", repo_id, training_path, perplexity_path=perplexity_path)


def run_mini(run: RunConfig, repo_id: str, command: str) -> dict:
    """Train, export, check parity, evaluate and write the card; the results also go to `output_dir/results.json`.

    Args:
        run (`RunConfig`): The training run (`examples/m2_jax/mini.yaml` by default); `data.validation` is the
            held-out text scored.
        repo_id (`str`): The Hub repo the card's usage snippet loads.
        command (`str`): The command line, recorded on the card.

    Returns:
        `dict`: What `results.json` holds.

    Raises:
        ParityError: If the exported model's logits are not the Flax model's (then nothing is evaluated).
        ConfigError, InputFileError: If the run cannot work as configured (before anything is written).
    """
    started = time.perf_counter()
    _, state = train(run, command=command)
    out = Path(run.output_dir)
    model_dir = out / "final"
    # The folder as a Hub user gets it: its own code (trust_remote_code) and tokenizer, in float32.
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, trust_remote_code=True, dtype=torch.float32).eval()
    text = heldout_text(run.data.validation)
    seq_len = run.data.seq_len
    ids = tokenizer(text, add_special_tokens=False, return_tensors="np").input_ids[0]
    blocks = ids[: min(PARITY_BLOCKS, len(ids) // seq_len) * seq_len].reshape(-1, seq_len)
    parity = check_logit_parity(trained_flax_model(state, run), model, blocks)
    print(f"logit parity: max |Flax - PyTorch| = {parity['max_abs_diff']:.2e} (tolerance {PARITY_ATOL:g})")
    tokenizer_name = f"{len(tokenizer)}-piece byte-level BPE" if run.data.bpe_vocab_size else "Mistral-7B-v0.1"
    context = model.config.max_position_embeddings
    perplexity = perplexity_report(model, tokenizer, text, context, context // 2, tokenizer_name)
    perplexity["dataset"] = describe_heldout(run.data.validation)
    date = datetime.now(timezone.utc).isoformat(timespec="seconds")
    write_card(out, perplexity, repo_id, date)
    results = {
        "command": command,
        "date": date,
        "machine": machine(),
        "output_dir": str(out),
        "config": dataclasses.asdict(run),
        "training": load_training_metadata(out / METADATA_FILE),
        "validation_losses": read_jsonl(out / "eval_losses.jsonl"),
        "parity": parity,
        "perplexity": perplexity,
        "wall_seconds": time.perf_counter() - started,
    }
    (out / RESULTS_FILE).write_text(json.dumps(results, indent=2) + "\n")
    print(
        f"held-out text: token perplexity {perplexity['token_perplexity']:.2f}, "
        f"{perplexity['bits_per_byte']:.4f} bits per byte ({perplexity['scored_tokens']:,} tokens scored)"
    )
    return results
