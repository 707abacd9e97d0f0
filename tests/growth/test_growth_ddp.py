"""A real two-process DDP run on CPU: after `grow_prepared`, the new layers' gradients are all-reduced.

Without re-wrapping, DDP knows only the parameters it was built with: the new layers would train on
each rank's own gradients and the replicas would drift apart. tests/scripts/ddp_growth.py trains,
grows and dumps gradients and parameters per rank; this test compares the ranks.
"""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    root = Path(__file__).resolve().parents[2]
    out = tmp_path_factory.mktemp("ddp_growth")
    env = {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "HF_HOME": str(out / "hf_home"),  # no user accelerate config file
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--multi_gpu",  # torchrun; with ACCELERATE_USE_CPU a gloo group on CPU (`--cpu` alone starts one process)
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_port",
        str(_free_port()),
        str(root / "tests" / "scripts" / "ddp_growth.py"),
        str(out),
    ]
    result = subprocess.run(
        command, cwd=root, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"accelerate launch failed:\n{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
    return [load_file(out / f"rank{r}.safetensors") for r in range(2)]


def _entries(dump: dict, kind: str) -> dict:
    return {k[len(kind) + 1 :]: v for k, v in dump.items() if k.startswith(kind + ".")}


def test_ranks_saw_different_data(ranks):
    # The control: were gradients not all-reduced, they would differ between ranks.
    assert not torch.allclose(ranks[0]["losses"], ranks[1]["losses"])
    local = [_entries(r, "local") for r in ranks]
    assert local[0] and all(not torch.allclose(local[0][n], local[1][n]) for n in local[0])


def test_new_layers_gradients_are_all_reduced_after_growth(ranks):
    local = [_entries(r, "local") for r in ranks]
    synced = [_entries(r, "synced") for r in ranks]
    assert int(ranks[0]["num_layers"]) == 4
    assert set(synced[0]) == set(local[0]) and len(synced[0]) == 2 * 9  # every parameter of layers 2 and 3
    for name in synced[0]:
        torch.testing.assert_close(synced[0][name], synced[1][name], rtol=0, atol=0, msg=name)
        # DDP averages the ranks' accumulated gradients.
        torch.testing.assert_close(synced[0][name], (local[0][name] + local[1][name]) / 2, rtol=1e-5, atol=1e-7)


def test_parameters_stay_identical_across_ranks_after_growth(ranks):
    params = [_entries(r, "param") for r in ranks]
    assert len(params[0]) == 2 + 4 * 9  # embeddings (the head is tied), final norm, 4 layers
    for name in params[0]:
        torch.testing.assert_close(params[0][name], params[1][name], rtol=0, atol=0, msg=name)
    at_growth = _entries(ranks[0], "grown")
    assert len(at_growth) == 2 * 9
    for name, value in at_growth.items():
        assert not torch.equal(params[0][name], value), f"new parameter {name} did not train"
