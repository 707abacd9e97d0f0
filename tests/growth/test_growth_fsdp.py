"""The strong test of growth under FSDP2: 2 sharded processes that grow mid-run train as 1 process does.

tests/scripts/fsdp_growth.py trains a tiny MTLM for 5 optimizer steps, grows it 2 -> 4 layers with
`grow_prepared` after step 2, and dumps losses, learning rates and the final parameters. It runs once
under `accelerate launch --config_file examples/m1/fsdp.yaml --num_processes 2` (FSDP2, gloo on CPU),
once in 1 plain process, on the same global batches. In fp32 the two differ only by the order of
floating-point sums (FSDP reduce-scatters the ranks' gradients): losses within 1e-5, parameters
within 1e-5 absolute.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "tests" / "scripts" / "fsdp_growth.py"


def _run(command: list[str], out: Path) -> None:
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "HF_HOME": str(out / "hf_home"),  # no user accelerate config file
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    result = subprocess.run(
        [*command, str(SCRIPT), str(out)],
        cwd=ROOT,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, f"{command} failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp_growth")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", str(ROOT / "examples/m1/fsdp.yaml")]
    _run([*launch, "--num_processes", "2", "--main_process_port", str(port)], out)
    _run([sys.executable], out)
    return load_file(out / "world2.safetensors"), load_file(out / "world1.safetensors")


def test_the_model_grew_and_stayed_sharded(runs):
    sharded, single = runs
    assert int(sharded["num_layers"]) == int(single["num_layers"]) == 4
    # Counts of ranks: every parameter, the new layers' included, is a DTensor sharded over 2 ranks, and
    # right after growth each new layer's local shard equals its source's, with the same placements.
    assert int(sharded["sharded"]) == 2
    assert int(sharded["shards_copied"]) == 2


def test_losses_match_one_process_before_and_after_growth(runs):
    sharded, single = runs
    assert sharded["losses"].numel() == 10  # 5 optimizer steps x 2 micro-batches; growth before micro-batch 4
    torch.testing.assert_close(sharded["losses"], single["losses"], rtol=0, atol=1e-5)
    torch.testing.assert_close(sharded["lr"], single["lr"], rtol=0, atol=0)  # the schedule continues


def test_parameters_after_training_match_one_process(runs):
    sharded, single = runs
    names = {k for k in single if k.startswith("param.")}
    assert names == {k for k in sharded if k.startswith("param.")}
    assert any(".layers.3." in n for n in names)
    for name in names:
        torch.testing.assert_close(sharded[name], single[name], rtol=0, atol=1e-5, msg=name)
