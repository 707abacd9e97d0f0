"""The training bar honours tqdm's own switch, TQDM_DISABLE=1, which the study's worker processes inherit so
that two runs' bars do not interleave in one log."""

import os
import subprocess
import sys

import pytest

SCRIPT = "from mtlm_recipes.progress import training_bar; print(training_bar('run', 10).disable)"


@pytest.mark.parametrize("environment, disabled", [({"TQDM_DISABLE": "1"}, "True"), ({}, "False")])
def test_tqdm_disable_in_the_environment_turns_the_bar_off(environment, disabled):
    # A fresh interpreter: tqdm reads TQDM_* when it is imported.
    env = {k: v for k, v in os.environ.items() if not k.startswith("TQDM_")} | environment
    result = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, env=env, check=True)
    assert result.stdout.strip() == disabled
