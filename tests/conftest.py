"""Shared test fixtures. Everything runs offline on CPU."""

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

OUR_PACKAGES = ("mtlm_hf", "growth_ops", "mtlm_shards", "mtlm_recipes")

# A fresh interpreter in which some of our packages cannot be imported: a meta-path finder refuses them
# (an editable install would otherwise make them importable from any directory).
_BLOCKER = """
import importlib.abc, sys
class _Refuse(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {blocked!r}:
            raise ModuleNotFoundError(f"No module named {{name!r}} (blocked by the test)")
sys.meta_path.insert(0, _Refuse())
"""


@pytest.fixture
def run_without_mtlm(tmp_path):
    """Run Python code in a fresh process where our packages (or the `blocked` ones) are not importable.

    The code's last line of stdout must be JSON; it is parsed and returned.
    """

    def run(code: str, timeout: int = 300, blocked: tuple[str, ...] = OUR_PACKAGES) -> dict:
        env = {
            **os.environ,
            "HF_HUB_OFFLINE": "1",
            "TRANSFORMERS_OFFLINE": "1",
            "HF_MODULES_CACHE": str(tmp_path / "hf_modules"),
            "PYTHONPATH": "",
        }
        script = _BLOCKER.format(blocked=tuple(blocked)) + textwrap.dedent(code)
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=tmp_path,
            env=env,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
        )
        assert result.returncode == 0, f"subprocess failed:\n{result.stderr[-4000:]}"
        return json.loads(result.stdout.strip().splitlines()[-1])

    return run


@pytest.fixture
def repo_root() -> Path:
    return Path(__file__).resolve().parents[1]
