"""Width growth mid-run on 2 CPU processes, under DDP and under FSDP2: `grow_prepared` widens (and deepens)
the model, and the run trains as the same run in 1 process does, before and after growth.

tests/scripts/fsdp_growth.py `--spec width` trains a tiny MTLM for 5 optimizer steps and grows it after step 2
with `GrowthSpec(width=2, depth=2)` (hidden 2x, then 2 -> 4 layers; the widened moments mapped by the width
rule), under `accelerate launch` with 2 processes (DDP, or FSDP2 with examples/m1/fsdp.yaml), and in 1 plain
process, on the same global batches. Every rank trains on its half of each batch, so the parameters match
the single process only if the grown model's gradients are all-reduced (reduce-scattered under FSDP2, where
each rank widened its shards from tensors gathered one at a time). In fp32 the runs differ only by the order
of sums: losses and parameters within 1e-5.
"""

import sys

import pytest
from safetensors.torch import load_file
from scripts._launch import (
    ROOT,
    accelerate_launch,
    assert_losses_match_one_process,
    assert_parameters_match_one_process,
    launch,
)

pytestmark = pytest.mark.slow  # torchrun with 2 processes per engine, and 1 process: 30-50 s each, 2 shared cores

SCRIPT = ROOT / "tests" / "scripts" / "fsdp_growth.py"


@pytest.fixture(scope="module")
def single(tmp_path_factory):
    out = tmp_path_factory.mktemp("width_growth_single")
    launch([sys.executable], SCRIPT, str(out), "--spec", "width", home=out / "hf_home")
    return load_file(out / "world1_from0.safetensors")


@pytest.fixture(scope="module", params=["ddp", "fsdp"])
def runs(request, tmp_path_factory, single):
    out = tmp_path_factory.mktemp(f"width_growth_{request.param}")
    command = accelerate_launch(2, fsdp=request.param == "fsdp")
    launch(command, SCRIPT, str(out), "--spec", "width", home=out / "hf_home")
    return request.param, load_file(out / "world2_from0.safetensors"), single


def test_the_model_grew_in_width_and_depth(runs):
    engine, run, single = runs
    for dump in (run, single):
        assert int(dump["num_layers"]) == 4 and int(dump["hidden_size"]) == 2 * 32
        assert dump["param.model.layers.3.mlp.down_proj.weight"].shape == (64, 128)
    # Counts of ranks: right after growth each new layer equals its source (its shard, placed the same way).
    assert int(run["shards_copied"]) == 2
    assert int(run["sharded"]) == (2 if engine == "fsdp" else 0)  # every parameter a DTensor over both ranks


def test_losses_and_learning_rates_match_one_process_before_and_after_growth(runs):
    _, run, single = runs
    assert_losses_match_one_process(run, single)


def test_parameters_after_training_match_one_process(runs):
    _, run, single = runs
    assert_parameters_match_one_process(run, single)
