"""`make m2-mini` (examples/m2_jax/mini.py, mtlm_recipes.m2_jax.mini) run for real with tiny settings: trained in
JAX, exported, loaded in a fresh process with trust_remote_code, same logits as the trained Flax model, card
metadata equal to the run's results; and a broken export stops the run."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

jax = pytest.importorskip("jax", reason="JAX is not installed; the M2 JAX path needs `pip install '.[jax]'`")
from flax import nnx  # noqa: E402
from huggingface_hub import ModelCard  # noqa: E402
from transformers import AutoTokenizer  # noqa: E402

import mtlm_hf  # noqa: E402
from mtlm_recipes.errors import ConfigError  # noqa: E402
from mtlm_recipes.m2_jax import checkpointing  # noqa: E402
from mtlm_recipes.m2_jax.config import ModelConfig, load_config, model_config_of  # noqa: E402
from mtlm_recipes.m2_jax.mesh import make_mesh, state_shardings  # noqa: E402
from mtlm_recipes.m2_jax.mini import PARITY_ATOL, ParityError, check_logit_parity, trained_flax_model  # noqa: E402
from mtlm_recipes.m2_jax.steps import create_model_and_optimizer  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "examples" / "m2_jax" / "mini.py"
CORPUS = ROOT / "examples" / "data" / "shakespeare" / "validation.jsonl.gz"  # two plays: quick to tokenize
HELDOUT_CHARS = 20_000  # of Hamlet, scored in a few hundred windows
SEQ_LEN = 32


def write_tiny_run(tmp_path: Path) -> Path:
    """A config training a tiny M2 model for 4 steps on two plays, scored on the start of one of them."""
    with gzip.open(CORPUS, "rt", encoding="utf-8") as plays:
        hamlet = json.loads(plays.readline())["text"]
    heldout = tmp_path / "heldout.jsonl"
    heldout.write_text(json.dumps({"text": hamlet[:HELDOUT_CHARS]}) + "\n")
    config = {
        "output_dir": str(tmp_path / "out"),
        "model": {
            "preset": "m2",
            "overrides": {
                "hidden_size": 32,
                "intermediate_size": 85,
                "num_hidden_layers": 2,
                "num_attention_heads": 4,
                "max_position_embeddings": SEQ_LEN,
                "hidden_dropout": 0.1,
            },
        },
        "data": {
            "train": [{"path": str(CORPUS)}],
            "validation": [{"path": str(heldout)}],
            "seq_len": SEQ_LEN,
            "val_blocks": 16,
            "eos_per": "document",
            "bpe_vocab_size": 512,
        },
        "training": {"total_steps": 4, "batch_size": 8, "lr": 3e-3, "warmup_steps": 1, "eval_every": 2},
    }
    path = tmp_path / "mini.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def restored_flax_model(config_path: Path):
    """The trained Flax model, read back from the run's last orbax checkpoint (not from the export)."""
    run = load_config(config_path)
    config = model_config_of(run.model, run.data.bpe_vocab_size)
    _, abstract = nnx.split(nnx.eval_shape(lambda: create_model_and_optimizer(config, run.training, 0)))
    sharding = state_shardings(abstract, make_mesh(1), run.mesh.shard_params)
    manager = checkpointing.make_manager(Path(run.output_dir) / "checkpoints", 1)
    state = checkpointing.restore(manager, manager.latest_step(), abstract, sharding, config)
    manager.close()
    return trained_flax_model(state, run)


@pytest.mark.slow
def test_mini_trains_exports_checks_parity_evaluates_and_writes_its_card(tmp_path, run_without_mtlm):
    config_path = write_tiny_run(tmp_path)
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", str(config_path), "--repo-id", "someone/tiny-m2"],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        cwd=ROOT,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    out = tmp_path / "out"
    folder = out / "final"
    results = json.loads((out / "results.json").read_text())
    for name in ("model.safetensors", "config.json", "modeling_mtlm.py", "tokenizer.json", "generation_config.json"):
        assert (folder / name).is_file(), name
    assert (folder / "training_loss.png").stat().st_size > 0
    assert results["parity"]["max_abs_diff"] <= PARITY_ATOL
    assert results["training"]["steps"] == 4 and len(results["validation_losses"]) == 2

    # The text scored is the held-out file, every token but the first, in windows of the model's context.
    perplexity = results["perplexity"]
    assert perplexity["bytes"] == HELDOUT_CHARS and perplexity["scored_tokens"] == perplexity["tokens"] - 1
    assert (perplexity["max_length"], perplexity["stride"]) == (SEQ_LEN, SEQ_LEN // 2)
    assert perplexity["bits_per_byte"] == pytest.approx(perplexity["total_nll_nats"] / np.log(2) / perplexity["bytes"])

    # A fresh process without our packages loads the folder and gives the trained Flax model's logits.
    tokenizer = AutoTokenizer.from_pretrained(folder)
    line = "HAMLET. To be, or not to be, that is the question:"
    ids = tokenizer(line, add_special_tokens=False, return_tensors="np").input_ids[:, :SEQ_LEN]
    np.save(tmp_path / "ids.npy", ids)
    np.save(tmp_path / "flax_logits.npy", np.asarray(restored_flax_model(config_path)(ids)))
    remote = run_without_mtlm(
        f"""
        import json
        import numpy as np
        import torch
        from transformers import AutoModelForCausalLM, GenerationConfig
        folder = {str(folder)!r}
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True).eval()
        ids = torch.from_numpy(np.load({str(tmp_path / "ids.npy")!r})).long()
        with torch.no_grad():
            logits = model(ids).logits.numpy()
        expected = np.load({str(tmp_path / "flax_logits.npy")!r})
        print(json.dumps({{
            "max_abs_diff": float(np.abs(logits - expected).max()),
            "eos": GenerationConfig.from_pretrained(folder).eos_token_id,
        }}))
        """
    )
    assert remote["max_abs_diff"] <= PARITY_ATOL
    assert remote["eos"] == tokenizer.eos_token_id

    # The card's model-index holds exactly the run's measured figures, naming the text it scored.
    card = ModelCard.load(folder / "README.md")
    metrics = {result.metric_type: result.metric_value for result in card.data.eval_results}
    assert metrics == {key: perplexity[key] for key in ("token_perplexity", "bits_per_byte", "word_perplexity")}
    assert {result.dataset_name for result in card.data.eval_results} == {perplexity["dataset"]["name"]}
    assert str(tmp_path / "heldout.jsonl") in perplexity["dataset"]["name"]
    assert f"{perplexity['bits_per_byte']:.4f}" in card.text and results["command"] in card.text
    assert "`python " in card.text and "someone/tiny-m2" in card.text

    # An export that computes anything else stops the run, naming the difference.
    broken = mtlm_hf.MTLMForCausalLM.from_pretrained(folder).eval()
    broken.model.layers[0].mlp.down_proj.bias.data += 0.5
    with pytest.raises(ParityError, match=r"differ from the trained Flax model's by up to .* \(tolerance 0.0001"):
        check_logit_parity(restored_flax_model(config_path), broken, ids)


def test_a_trained_tokenizer_sets_the_vocabulary_and_refuses_what_contradicts_it(tmp_path):
    assert model_config_of(ModelConfig("m2"), vocab_size=512).vocab_size == 512
    with pytest.raises(ConfigError, match=r"vocab_size \(1000\) contradicts data.bpe_vocab_size \(512\)"):
        model_config_of(ModelConfig("m2", {"vocab_size": 1000}), vocab_size=512)
    mtlm_hf.MTLMConfig.from_preset("m2-tiny").save_pretrained(tmp_path)
    with pytest.raises(ConfigError, match="init_from continues a model with the tokenizer it was trained with"):
        model_config_of(ModelConfig(init_from=str(tmp_path)), vocab_size=512)
