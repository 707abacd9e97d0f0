"""The M2 JAX trainer (examples/m2_jax/train.py, mtlm_recipes.m2_jax) run for real: 8 simulated devices against 1,
exact resume from orbax checkpoints, a model grown in PyTorch continued in JAX, and bad input."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

jax = pytest.importorskip("jax", reason="JAX is not installed; the M2 JAX path needs `pip install '.[jax]'`")
from safetensors.torch import load_file  # noqa: E402

import mtlm_hf  # noqa: E402
from growth_ops import grow_depth  # noqa: E402
from mtlm_recipes.m2_jax.config import TrainingConfig, load_config, model_config_of, validate  # noqa: E402
from mtlm_recipes.m2_jax.corpus import batch_indices, load_blocks  # noqa: E402
from mtlm_recipes.m2_jax.mesh import make_mesh  # noqa: E402
from mtlm_recipes.m2_jax.trainer import train  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "m2_jax"
CORPUS = ROOT / "examples" / "data" / "shakespeare" / "validation.jsonl.gz"  # two plays: quick to tokenize

TINY = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "max_position_embeddings": 64,
    "hidden_dropout": 0.1,  # so that resuming and sharding must reproduce the dropout masks too
}


def write_config(path: Path, output_dir: Path, **training) -> Path:
    config = {
        "output_dir": str(output_dir),
        "model": {"preset": "m2", "overrides": dict(TINY)},
        "data": {"train": [{"path": str(CORPUS)}], "validation": [{"path": str(CORPUS)}], "seq_len": 32},
        "training": {
            "total_steps": 6,
            "batch_size": 8,
            "lr": 3e-3,
            "warmup_steps": 2,
            "log_every": 1,
            "eval_every": 3,
            "checkpoint_every": 2,
            "seed": 0,
            **training,
        },
    }
    path.write_text(yaml.safe_dump(config))
    return path


def run_script(
    *args: str, cache: Path, env: dict | None = None, code: str | None = None
) -> subprocess.CompletedProcess:
    """Run train.py (or `code`) in a fresh process. Runs sharing `cache` reuse each other's compiled XLA programs
    (JAX's persistent compilation cache), which changes no result and saves most of the time on 2 cores."""
    command = [sys.executable, "-c", textwrap.dedent(code)] if code else [sys.executable, str(EXAMPLE / "train.py")]
    cache_env = {"JAX_COMPILATION_CACHE_DIR": str(cache), "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    return subprocess.run(
        [*command, *args],
        capture_output=True,
        text=True,
        env={**os.environ, "HF_HUB_OFFLINE": "1", **cache_env, **(env or {})},
        cwd=ROOT,
        timeout=600,
    )


def logged_losses(output_dir: Path) -> dict[int, float]:
    lines = (output_dir / "train_losses.jsonl").read_text().splitlines()
    return {record["step"]: record["loss"] for record in map(json.loads, lines)}


@pytest.mark.slow
def test_eight_devices_give_the_one_device_losses_with_and_without_parameter_sharding(tmp_path):
    config = write_config(tmp_path / "config.yaml", tmp_path / "unused", total_steps=4, checkpoint_every=100)
    code = f"""
        import json
        import jax
        from mtlm_recipes.m2_jax.config import load_config
        from mtlm_recipes.m2_jax.trainer import train

        def run(name, num_devices, shard_params, stop_after=None):
            cfg = load_config({str(config)!r})
            cfg.output_dir = {str(tmp_path)!r} + "/" + name.split(":")[0]
            cfg.mesh.num_devices, cfg.mesh.shard_params = num_devices, shard_params
            losses, state = train(cfg, stop_after=stop_after)
            leaves = jax.tree.leaves(state)
            return {{
                "losses": losses,
                "devices": len(leaves[0].sharding.device_set),
                "sharded_arrays": sum(not leaf.sharding.is_fully_replicated for leaf in leaves),
            }}

        print(json.dumps({{
            "one_device": run("one", 1, False),
            "batch_sharded": run("batch", 8, False),
            "params_sharded": run("params", 8, True),
            "params_sharded_first_half": run("moved", 8, True, stop_after=2),
            "resumed_on_one_device": run("moved:resume", 1, False),
        }}))
        """
    result = run_script(
        cache=tmp_path / "xla_cache", env={"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}, code=code
    )
    assert result.returncode == 0, result.stderr[-4000:]
    runs = json.loads(result.stdout.strip().splitlines()[-1])
    one = runs["one_device"]
    assert one["devices"] == 1 and len(one["losses"]) == 4
    assert runs["batch_sharded"]["devices"] == 8 and runs["batch_sharded"]["sharded_arrays"] == 0
    assert runs["params_sharded"]["devices"] == 8 and runs["params_sharded"]["sharded_arrays"] > 0
    for name in ("batch_sharded", "params_sharded"):
        np.testing.assert_allclose(runs[name]["losses"], one["losses"], rtol=1e-5, err_msg=name)
    # A checkpoint written with parameters split over 8 devices resumes on 1 and carries on alike.
    resumed = runs["params_sharded_first_half"]["losses"] + runs["resumed_on_one_device"]["losses"]
    np.testing.assert_allclose(resumed, one["losses"], rtol=1e-5)
    assert len(one["losses"]) == len(set(one["losses"]))  # the model trains: no two steps give the same loss


@pytest.mark.slow
def test_interrupted_run_resumes_from_orbax_with_exactly_the_same_losses(tmp_path):
    config = write_config(tmp_path / "config.yaml", tmp_path / "unused")
    straight, interrupted = tmp_path / "straight", tmp_path / "interrupted"
    cache = tmp_path / "xla_cache"
    first = run_script("--config", str(config), "--output-dir", str(straight), cache=cache)
    assert first.returncode == 0, first.stderr[-4000:]
    stopped = run_script("--config", str(config), "--output-dir", str(interrupted), "--stop-after", "3", cache=cache)
    assert stopped.returncode == 0, stopped.stderr[-4000:]
    assert "stopped after step 3" in stopped.stdout and not (interrupted / "final").exists()
    resumed = run_script("--config", str(config), "--output-dir", str(interrupted), cache=cache)
    assert resumed.returncode == 0, resumed.stderr[-4000:]
    assert "resumed from" in resumed.stdout and "at step 3" in resumed.stdout

    expected = logged_losses(straight)
    assert sorted(expected) == [1, 2, 3, 4, 5, 6]
    assert logged_losses(interrupted) == expected  # bit for bit, dropout included
    assert (straight / "eval_losses.jsonl").read_text() == (interrupted / "eval_losses.jsonl").read_text()
    weights = load_file(straight / "final" / "model.safetensors")
    resumed_weights = load_file(interrupted / "final" / "model.safetensors")
    assert weights.keys() == resumed_weights.keys()
    assert all(torch.equal(weights[key], resumed_weights[key]) for key in weights)

    # The exported folder is an MTLM checkpoint of the trained model.
    model = mtlm_hf.MTLMForCausalLM.from_pretrained(straight / "final")
    assert model.config.position_embedding_type == "learned" and model.config.num_hidden_layers == 2

    # Resuming into a model of another shape is refused before anything is overwritten.
    other = load_config(write_config(tmp_path / "other.yaml", interrupted, total_steps=8))
    other.model.overrides["hidden_size"] = 48
    with pytest.raises(
        ValueError, match=r"belongs to another model \(hidden_size: saved 32, now 48, head_dim: saved 8, now 12\)"
    ):
        train(other)
    assert logged_losses(interrupted) == expected


@pytest.mark.slow
def test_model_grown_in_pytorch_continues_training_in_jax(tmp_path):
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset("m2", **{**TINY, "hidden_dropout": 0.0})
    grown = grow_depth(mtlm_hf.MTLMForCausalLM(config), factor=2)
    grown.save_pretrained(tmp_path / "grown")

    cfg = load_config(write_config(tmp_path / "config.yaml", tmp_path / "run", total_steps=2, warmup_steps=1))
    cfg.model.init_from = str(tmp_path / "grown")
    cfg.model.overrides = {}
    losses, _ = train(cfg)

    # The first step's loss is the grown PyTorch model's loss on the same batch (EOS targets left out).
    tokenizer = mtlm_hf.mistral_tokenizer()
    blocks = load_blocks(cfg.data.train, tokenizer, cfg.data.seq_len, cfg.data.eos_per)
    batch = torch.tensor(blocks[batch_indices(len(blocks), 8, 0, 0)], dtype=torch.long)
    labels = batch.masked_fill(batch == tokenizer.eos_token_id, -100)
    with torch.no_grad():
        expected = grown.eval()(batch, labels=labels).loss.item()
    assert losses[0] == pytest.approx(expected, abs=1e-4)
    assert losses[1] != losses[0]
    final = mtlm_hf.MTLMForCausalLM.from_pretrained(tmp_path / "run" / "final")
    assert final.config.num_hidden_layers == 4


def test_impossible_runs_are_refused_before_training(tmp_path):
    cfg = load_config(write_config(tmp_path / "config.yaml", tmp_path / "run", batch_size=6))
    config = model_config_of(cfg.model)
    with pytest.raises(ValueError, match=r"batch_size \(6\) must divide evenly over the mesh's 4 devices"):
        validate(cfg, config, num_devices=4)
    cfg.data.seq_len = 128
    with pytest.raises(ValueError, match=r"seq_len \(128\) exceeds the model's max_position_embeddings \(64\)"):
        validate(cfg, config, num_devices=1)
    cfg.data.seq_len, cfg.training.warmup_steps = 32, 6
    with pytest.raises(ValueError, match=r"warmup_steps \(6\) must lie in \[0, total_steps\) \(total_steps is 6\)"):
        validate(cfg, config, num_devices=1)
    with pytest.raises(ValueError, match="xla_force_host_platform_device_count=64"):
        make_mesh(64)
    with pytest.raises(TypeError, match="unexpected keyword argument 'batch_sise'"):
        TrainingConfig(batch_sise=4)
