"""The `mtlm-grow` command (`python -m growth_ops.cli`), run as a user runs it: in a subprocess, on real folders."""

import json
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from zoo import assert_same_tensors, build, read_tensors

from growth_ops import GrowthSpec, grow, grow_depth, plan_checkpoint_growth, plan_depth
from growth_ops.cli import main


def save_llama(folder, **overrides):
    model = build("llama", **overrides)
    model.save_pretrained(folder)
    return model


def mtlm_grow(*args, cwd, file_size_limit=None):
    """Run `python -m growth_ops.cli ARGS` offline; `file_size_limit` caps the size of any file it writes."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_MODULES_CACHE": str(Path(cwd) / "hf_modules")}

    def limit_file_size():
        resource.setrlimit(resource.RLIMIT_FSIZE, (file_size_limit, file_size_limit))

    return subprocess.run(
        [sys.executable, "-m", "growth_ops.cli", *map(str, args)],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        preexec_fn=limit_file_size if file_size_limit else None,
    )


def leftovers(parent, name):
    return [p.name for p in Path(parent).iterdir() if p.name.startswith(f".{name}")]


def test_cli_grows_a_checkpoint_as_grow_depth_does_with_a_progress_bar(tmp_path):
    model = save_llama(tmp_path / "src")
    result = mtlm_grow("src", "dst", "--factor", "2", "--method", "stack", "--max-shard-size", "20KB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "Growing checkpoint" in result.stderr and "100%" in result.stderr
    assert str(plan_depth(3, factor=2)) in result.stdout
    grow_depth(model, factor=2)
    model.save_pretrained(tmp_path / "memory")
    expected, actual = read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst")
    assert sorted(actual) == sorted(expected)
    assert all(torch.equal(actual[name], tensor) for name, tensor in expected.items())
    assert json.loads((tmp_path / "dst" / "model.safetensors.index.json").read_text())["metadata"][
        "total_size"
    ] == sum(t.nbytes for t in actual.values())
    assert leftovers(tmp_path, "dst") == []


def test_cli_dry_run_prints_the_plan_and_writes_nothing(tmp_path):
    save_llama(tmp_path / "src")
    before = sorted(p.name for p in tmp_path.iterdir())
    result = mtlm_grow("src", "dst", "--method", "identity", "--positions", "0,2", "--dry-run", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert str(plan_depth(3, method="identity", positions=[0, 2])) in result.stdout
    assert "nothing written" in result.stdout
    assert sorted(p.name for p in tmp_path.iterdir() if p.name != "hf_modules") == before


@pytest.mark.parametrize(
    "flags, plan",
    [
        (["--factor", "2"], plan_depth(3, factor=2, method="stack")),
        (["--num-layers", "5", "--method", "interleave"], plan_depth(3, new_num_layers=5, method="interleave")),
        (["--method", "dus", "--overlap", "1"], plan_depth(3, method="dus", overlap=1)),
        (["--layer-map", "0,1,2,1,2"], plan_depth(3, layer_map=[0, 1, 2, 1, 2])),
        (["--method", "identity", "--factor", "2"], plan_depth(3, factor=2, method="identity")),
    ],
)
def test_cli_flags_give_the_plans_of_plan_depth(flags, plan, tmp_path, capsys):
    save_llama(tmp_path / "src")
    assert main([str(tmp_path / "src"), str(tmp_path / "dst"), *flags, "--dry-run"]) == 0
    assert str(plan) in capsys.readouterr().out
    assert not (tmp_path / "dst").exists()


def test_cli_refuses_to_overwrite_without_force(tmp_path, capsys):
    save_llama(tmp_path / "src")
    (tmp_path / "dst").mkdir()
    (tmp_path / "dst" / "notes.txt").write_text("mine")
    args = [str(tmp_path / "src"), str(tmp_path / "dst"), "--factor", "2"]
    assert main(args) == 1
    error = capsys.readouterr().err
    assert "dst already exists" in error and "--force" in error
    assert (tmp_path / "dst" / "notes.txt").read_text() == "mine"
    assert main([*args, "--force"]) == 0
    assert not (tmp_path / "dst" / "notes.txt").exists()
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["num_hidden_layers"] == 6
    assert leftovers(tmp_path, "dst") == []


def test_cli_failing_half_way_through_the_weights_leaves_no_checkpoint(tmp_path):
    # Files above a size limit cannot be written (EFBIG, as on a full disk). The limit lets the config and the
    # first weights file through and stops a later, larger one, so the write fails with files already written.
    save_llama(tmp_path / "src", hidden_size=64, intermediate_size=256)
    growth = plan_checkpoint_growth(tmp_path / "src", GrowthSpec(depth=2), max_shard_size="100KB")
    sizes = [sum(growth.tensors[name].nbytes for name in names) for names in growth.shards.values()]
    limit = sizes[0] + 8192  # room for the first file's header
    assert max(sizes[1:]) > limit
    result = mtlm_grow("src", "dst", "--factor", "2", "--max-shard-size", "100KB", cwd=tmp_path, file_size_limit=limit)
    assert result.returncode == 1
    assert "File too large" in result.stderr and "nothing was left at" in result.stderr
    assert "Growing checkpoint" in result.stderr  # it had started writing weights
    assert not (tmp_path / "dst").exists()
    assert leftovers(tmp_path, "dst") == []


def test_cli_explains_bad_input_without_a_traceback(tmp_path, capsys):
    save_llama(tmp_path / "src")
    (tmp_path / "empty").mkdir()
    assert main([str(tmp_path / "empty"), str(tmp_path / "dst"), "--factor", "2"]) == 1
    assert "has no config.json, so it is not a Transformers checkpoint" in capsys.readouterr().err
    config = json.loads((tmp_path / "src" / "config.json").read_text())
    (tmp_path / "src" / "config.json").write_text(json.dumps({**config, "model_type": "not-a-model"}))
    assert main([str(tmp_path / "src"), str(tmp_path / "dst"), "--factor", "2"]) == 1
    assert "model_type 'not-a-model', which transformers" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        main([str(tmp_path / "src"), str(tmp_path / "dst"), "--layer-map", "0,one"])
    assert exit_info.value.code == 2
    assert "expected comma-separated layer indices" in capsys.readouterr().err
    assert not (tmp_path / "dst").exists()


@pytest.mark.slow
def test_cli_grows_a_custom_code_checkpoint_only_with_trust_remote_code(tmp_path):
    build("mtlm-m1").save_pretrained(tmp_path / "src")
    refused = mtlm_grow("src", "dst", "--factor", "2", cwd=tmp_path)
    assert refused.returncode == 1
    assert "--trust-remote-code" in refused.stderr
    grown = mtlm_grow("src", "dst", "--factor", "2", "--trust-remote-code", cwd=tmp_path)
    assert grown.returncode == 0, grown.stderr
    config = json.loads((tmp_path / "dst" / "config.json").read_text())
    assert config["num_hidden_layers"] == 6 and len(config["layer_types"]) == 6
    assert {"configuration_mtlm.py", "modeling_mtlm.py"} <= {p.name for p in (tmp_path / "dst").iterdir()}


@pytest.mark.parametrize(
    "flags, what",
    [
        (["--depth", "0.5"], "`factor` must be a number >= 1"),
        (["--method", "stack", "--positions", "1"], "`positions` belongs to method 'identity'"),
        (["--spec", "missing.json"], "is not a file"),
        (["--spec", "spec.json", "--depth", "2"], "describes the whole growth: drop depth"),
        (["--spec", "typo.json"], "Unknown growth spec key 'dpeth': did you mean 'depth'?"),
        (["--layer-map", "0,one"], "expected comma-separated layer indices"),
        (["--depht", "2"], "unrecognized arguments: --depht"),
        (["--width", "1.5"], "argument --width: invalid int value"),
        (["--depth", "2", "--width-noise", "1e-3"], "give `width` (or `intermediate`) > 1 too"),
    ],
)
def test_cli_argument_mistakes_print_one_line_and_exit_2(flags, what, tmp_path):
    (tmp_path / "spec.json").write_text(GrowthSpec(depth=2).to_json())
    (tmp_path / "typo.json").write_text('{"dpeth": 2}')
    result = mtlm_grow("src", "dst", *flags, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and result.stderr.startswith("mtlm-grow: error: "), result.stderr
    assert what in result.stderr and "--help" in result.stderr
    assert not (tmp_path / "dst").exists()


@pytest.mark.slow
@pytest.mark.parametrize("source, what", [("absent", "does not exist"), ("src", "dst already exists")])
def test_cli_refused_input_prints_one_error_line_without_a_traceback(source, what, tmp_path):
    save_llama(tmp_path / "src")
    if source == "src":
        (tmp_path / "dst").mkdir()
    result = mtlm_grow(source, "dst", "--depth", "2", cwd=tmp_path)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    errors = [line for line in result.stderr.splitlines() if line.startswith("mtlm-grow: error: ")]
    assert len(errors) == 1 and what in errors[0]


def test_cli_spec_file_grows_as_grow_does_in_memory(tmp_path, capsys):
    model = save_llama(tmp_path / "src")
    spec = GrowthSpec(depth_method="identity", positions=(0, 2, 2))
    (tmp_path / "spec.json").write_text(spec.to_json())
    assert main([str(tmp_path / "src"), str(tmp_path / "dst"), "--spec", str(tmp_path / "spec.json")]) == 0
    assert str(spec.plan_depth(3)) in capsys.readouterr().out
    grow(model, spec).save_pretrained(tmp_path / "memory")
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst"))


def test_cli_grows_width_and_depth_as_grow_does_in_memory(tmp_path):
    model = save_llama(tmp_path / "src")
    flags = ["--width", "2", "--intermediate", "3", "--depth", "2", "--width-noise", "1e-3", "--seed", "1"]
    result = mtlm_grow("src", "dst", *flags, "--max-shard-size", "200KB", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "width: hidden and heads x2, intermediate x3" in result.stdout
    grow(model, GrowthSpec(width=2, intermediate=3, depth=2, width_noise=1e-3, seed=1))
    model.save_pretrained(tmp_path / "memory")
    assert_same_tensors(read_tensors(tmp_path / "memory"), read_tensors(tmp_path / "dst"))
    assert json.loads((tmp_path / "dst" / "config.json").read_text())["hidden_size"] == 64


def test_plan_subcommand_answers_without_a_checkpoint(capsys):
    assert main(["plan", "--params", "7B", "--tokens", "2T", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert answer["grow"]["value"] == "yes" and answer["factor"]["value"] == 4
    with pytest.raises(SystemExit) as exit_info:
        main(["plan", "--params", "7B"])
    assert exit_info.value.code == 2 and "--tokens" in capsys.readouterr().err
