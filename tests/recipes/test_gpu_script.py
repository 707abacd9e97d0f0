"""benchmarks/gpu/run.sh in its CPU setting, so the GPU script cannot rot before a GPU is lent."""

import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_script_runs_on_cpu_in_its_tiny_setting(repo_root, tmp_path):
    env = {**os.environ, "PYTHON": sys.executable, "OMP_NUM_THREADS": "2"}
    result = subprocess.run(
        ["bash", "benchmarks/gpu/run.sh", str(tmp_path), "--tiny"],
        cwd=repo_root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-4000:]
    summary = json.loads((tmp_path / "gpu.json").read_text())
    trainer = summary["trainer"]
    assert trainer["growth"]["to_layers"] == 2 * trainer["growth"]["from_layers"]
    assert trainer["before_growth"]["tokens_per_s"] > 0 and trainer["after_growth"]["tokens_per_s"] > 0
    assert trainer["projected_card_hours"] > 0
    assert summary["peak_dense_bf16_tflops"] is None  # no MFU is claimed on a CPU
    assert summary["matmul"]["tflops"] > 0
    contenders = summary["throughput"]["cpu"]["results"]["m1-tiny"]["fp32"]
    assert {"llama", "mtlm", "mtlm-compile", "mtlm-liger"} <= contenders.keys()
    assert all(contenders[name]["tokens_per_s"] > 0 for name in ("llama", "mtlm", "mtlm-compile", "mtlm-liger"))
    assert (tmp_path / "log.txt").read_text().count("== ") == 4
