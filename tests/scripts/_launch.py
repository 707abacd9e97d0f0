"""How the multi-process tests start a script (`accelerate launch` on CPU processes, offline, one thread each),
and read what its ranks dumped.

Imported by the tests as `from scripts._launch import launch` (tests/ is on `sys.path`).
"""

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
FSDP_CONFIG = ROOT / "examples" / "m1" / "fsdp.yaml"


def launch_env(home: Path) -> dict[str, str]:
    """Offline, one thread per process, a gloo group on CPU, and no user accelerate config file."""
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "TRANSFORMERS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "ACCELERATE_USE_CPU": "true",
        "HF_HOME": str(home),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }


def accelerate_launch(num_processes: int, *, fsdp: bool) -> list[str]:
    """The launcher: torchrun through `accelerate launch`, with examples/m1/fsdp.yaml or as DDP.

    (`--cpu --num_processes 2` starts a single process in accelerate 1.15: its CPU launcher needs mpirun.
    `--multi_gpu` and the FSDP config go through torchrun, and `ACCELERATE_USE_CPU` makes that a gloo group.)
    """
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    command = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", str(num_processes)]
    if fsdp:
        command += ["--config_file", str(FSDP_CONFIG)]
    else:
        command += ["--multi_gpu", "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no"]
    return [*command, "--main_process_port", str(port)]


def launch(
    command: list[str], script: Path, *args: str, home: Path, timeout: int = 600
) -> subprocess.CompletedProcess:
    """Run `script` under `command` (a launcher or `[sys.executable]`) and assert that it succeeded.

    On timeout the launcher is sent SIGTERM, on which torchrun stops its ranks (each runs in a session of its
    own, so killing the launcher alone would leave them running, orphaned, on the cores the next tests need);
    whatever still runs after a grace period is killed with the launcher's session.
    """
    full = [*command, str(script), *args]
    with subprocess.Popen(
        full,
        cwd=ROOT,
        env=launch_env(home),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    ) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.terminate()
            try:
                stdout, stderr = process.communicate(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                stdout, stderr = process.communicate()
            raise AssertionError(
                f"{script.name} ran past {timeout} s and was killed with its ranks:\n{stdout[-3000:]}\n{stderr[-6000:]}"
            ) from None
    result = subprocess.CompletedProcess(full, process.returncode, stdout, stderr)
    assert result.returncode == 0, f"{command} {script.name} failed:\n{stdout[-3000:]}\n{stderr[-6000:]}"
    return result


def entries(dump: dict, kind: str) -> dict:
    """The `kind.{name}` tensors of a rank's dump, by name."""
    return {k[len(kind) + 1 :]: v for k, v in dump.items() if k.startswith(kind + ".")}


def assert_ranks_agree_and_new_layers_trained(ranks: list[dict]) -> None:
    """Every parameter ends equal on both ranks (`param.*`), and every new layer's parameter moved after
    growth (`grown.*`, taken right after it): the grown 4-layer tiny MTLM of tests/scripts/_tiny_training.py."""
    params = [entries(r, "param") for r in ranks]
    assert len(params[0]) == 2 + 4 * 9  # embeddings (the head is tied), final norm, 4 layers
    for name in params[0]:
        torch.testing.assert_close(params[0][name], params[1][name], rtol=0, atol=0, msg=name)
    at_growth = entries(ranks[0], "grown")
    assert len(at_growth) == 2 * 9
    for name, value in at_growth.items():
        assert not torch.equal(params[0][name], value), f"new parameter {name} did not train"


def assert_losses_match_one_process(run: dict, single: dict) -> None:
    """A run of tests/scripts/fsdp_growth.py on several processes has the single process's losses (fp32: the
    order of sums, 1e-5) and learning rates (exactly: the schedule continues), before and after growth."""
    assert run["losses"].numel() == 10  # 5 optimizer steps x 2 micro-batches; growth before micro-batch 4
    torch.testing.assert_close(run["losses"], single["losses"], rtol=0, atol=1e-5)
    torch.testing.assert_close(run["lr"], single["lr"], rtol=0, atol=0)


def assert_parameters_match_one_process(run: dict, single: dict) -> None:
    """Every final parameter of that run, the grown layers' included, is the single process's within 1e-5."""
    names = {k for k in single if k.startswith("param.")}
    assert names == {k for k in run if k.startswith("param.")}
    assert any(".layers.3." in n for n in names)
    for name in names:
        torch.testing.assert_close(run[name], single[name], rtol=0, atol=1e-5, msg=name)
