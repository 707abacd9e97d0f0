"""The strong tests of growth under FSDP2: 2 sharded processes that grow mid-run train as 1 process does,
and a run saved with Accelerate's sharded `save_state` before and after growth resumes to the same losses,
on another number of processes too.

tests/scripts/fsdp_growth.py trains a tiny MTLM for 5 optimizer steps, grows it 2 -> 4 layers with
`grow_prepared` after step 2, and dumps losses, learning rates and the final parameters. It runs once
under `accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2` (FSDP2, gloo on CPU),
once in 1 plain process, on the same global batches. In fp32 the two differ only by the order of
floating-point sums (FSDP reduce-scatters the ranks' gradients): losses within 1e-5, parameters
within 1e-5 absolute. The resumed pieces change the world size, so the same tolerance holds for them.
"""

import sys

import pytest
import torch
from safetensors.torch import load_file
from scripts._launch import (
    ROOT,
    accelerate_launch,
    assert_losses_match_one_process,
    assert_parameters_match_one_process,
    launch,
)

pytestmark = pytest.mark.slow

SCRIPT = ROOT / "tests" / "scripts" / "fsdp_growth.py"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_growth")
    launch(accelerate_launch(2, fsdp=True), SCRIPT, str(out), home=out / "hf_home")
    launch([sys.executable], SCRIPT, str(out), home=out / "hf_home")
    return load_file(out / "world2_from0.safetensors"), load_file(out / "world1_from0.safetensors")


@pytest.fixture(scope="module")
def pieces(tmp_path_factory):
    """The same run in three pieces, each resumed from the sharded state the one before saved:
    2 processes save after step 1 (before growth); 1 FSDP process resumes, grows at step 2 and saves
    after step 3; 2 processes resume the grown model and finish."""
    out = tmp_path_factory.mktemp("fsdp_resume")
    launch(accelerate_launch(2, fsdp=True), SCRIPT, str(out), "--stop-after", "1", home=out / "hf_home")
    launch(accelerate_launch(1, fsdp=True), SCRIPT, str(out), "--resume", "--stop-after", "3", home=out / "hf_home")
    launch(accelerate_launch(2, fsdp=True), SCRIPT, str(out), "--resume", home=out / "hf_home")
    return [load_file(out / f"{name}.safetensors") for name in ("world2_from0", "world1_from1", "world2_from3")]


def test_the_model_grew_and_stayed_sharded(runs):
    sharded, single = runs
    assert int(sharded["num_layers"]) == int(single["num_layers"]) == 4
    # Counts of ranks: every parameter, the new layers' included, is a DTensor sharded over 2 ranks, and
    # right after growth each new layer's local shard equals its source's, with the same placements.
    assert int(sharded["sharded"]) == 2
    assert int(sharded["shards_copied"]) == 2


def test_losses_match_one_process_before_and_after_growth(runs):
    assert_losses_match_one_process(*runs)


def test_parameters_after_training_match_one_process(runs):
    assert_parameters_match_one_process(*runs)


def test_resumes_across_growth_and_world_sizes_as_the_uninterrupted_run(runs, pieces):
    whole, _ = runs
    assert [int(p["num_layers"]) for p in pieces] == [2, 4, 4]
    assert int(pieces[2]["sharded"]) == 2  # the grown model, loaded from 1 process's shards, is sharded over 2
    losses = torch.cat([p["losses"] for p in pieces])
    assert losses.numel() == whole["losses"].numel() == 10
    torch.testing.assert_close(losses, whole["losses"], rtol=0, atol=1e-5)
    torch.testing.assert_close(torch.cat([p["lr"] for p in pieces]), whole["lr"], rtol=0, atol=0)
    for name in (k for k in whole if k.startswith("param.")):
        torch.testing.assert_close(pieces[2][name], whole[name], rtol=0, atol=1e-5, msg=name)
