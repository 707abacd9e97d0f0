"""The one run-config loader (mtlm_recipes.run_config) both trainers read their YAML with: every key at every level
must name a field, values must fit the field's type, and the error names the key, its section and the nearest key."""

import pytest
import yaml

from growth_ops import GrowthSpec
from mtlm_recipes.errors import ConfigError, InputFileError
from mtlm_recipes.m1.config import RunConfig as M1RunConfig
from mtlm_recipes.m1.config import load_config as load_m1_config
from mtlm_recipes.m2_jax.config import load_config as load_m2_config
from mtlm_recipes.run_config import load_run_config


def write(tmp_path, text: str):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    return path


def test_the_shipped_configs_load_into_their_dataclasses(repo_root):
    smoke = load_m1_config(repo_root / "examples/m1/smoke.yaml")
    assert smoke.growth.spec == GrowthSpec(depth=2, depth_method="stack")
    assert smoke.training.total_steps == 60 and smoke.training.betas == (0.9, 0.95)
    assert smoke.data.train[0].path.endswith("train.jsonl.gz") and smoke.data.train[0].weight == 1.0
    recipe = load_m1_config(repo_root / "examples/m1/m1.yaml")
    assert recipe.growth.at_step == 18000 and recipe.training.lr == pytest.approx(7e-4)
    for name in ("smoke.yaml", "m2.yaml"):
        assert load_m2_config(repo_root / "examples/m2_jax" / name).data.eos_per == "line"


def test_a_silent_yaml_gives_the_defaults(tmp_path):
    assert load_run_config(write(tmp_path, ""), M1RunConfig) == M1RunConfig()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("trainng: {total_steps: 5}", "unknown key 'trainng' at the top level; did you mean 'training'?"),
        ("training: {lrr: 0.1}", "unknown key 'lrr' in training; did you mean 'lr'?"),
        ("data: {train: [{pth: a.txt}]}", "unknown key 'pth' in data.train[0]; did you mean 'path'?"),
        ("growth: {spec: {dept: 2}}", "growth.spec: Unknown growth spec key 'dept': did you mean 'depth'?"),
        ("growth: {spec: {factor: 2}}", "did you mean 'depth'?"),
        ("xyz: 1", "unknown key 'xyz' at the top level (valid keys: output_dir, model, data, growth, training)"),
    ],
)
def test_an_unknown_key_at_any_level_is_named_with_its_section_and_the_nearest_key(tmp_path, text, message):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_m1_config(path)
    assert message in str(error.value) and str(path) in str(error.value)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("training: {total_steps: ten}", "training.total_steps must be a whole number, got 'ten'"),
        ("training: {mixed_precision: bf15}", "must be one of ['no', 'bf16'], got 'bf15'; did you mean 'bf16'?"),
        ("training: {betas: [0.9]}", "training.betas must be a list of 2"),
        ("growth: {optimizer_state: keep}", "growth.optimizer_state must be one of ['copy', 'reset']"),
        ("growth: {spec: {depth: 2, depth_method: stak}}", "growth.spec: Unknown method 'stak'"),
        ("data: {streaming: yes please}", "data.streaming must be true or false"),
        ("data: {train: [{weight: 2}]}", "data.train[0] needs the key 'path'"),
        ("model: [m1]", "model must be a mapping"),
        ("training: {lr: [1, 2", "is not valid YAML (line 1"),
    ],
)
def test_a_bad_value_is_named_with_what_the_field_takes(tmp_path, text, message):
    with pytest.raises(ConfigError) as error:
        load_m1_config(write(tmp_path, text))
    assert message in str(error.value)


def test_numbers_are_read_as_yaml_1_1_writes_them(tmp_path):
    # PyYAML reads `7e-4` (no dot) as a string; a float field takes it as the number it means.
    cfg = load_m1_config(write(tmp_path, "training: {lr: 7e-4, min_lr_ratio: 1, total_steps: 8}"))
    assert cfg.training.lr == pytest.approx(7e-4) and isinstance(cfg.training.min_lr_ratio, float)


def test_a_missing_config_file_is_named(tmp_path):
    with pytest.raises(InputFileError, match="no config file"):
        load_m1_config(tmp_path / "nowhere.yaml")


def test_the_m2_config_refuses_m1_only_keys(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'grad_accum' in training"):
        load_m2_config(write(tmp_path, yaml.safe_dump({"training": {"grad_accum": 2}})))
