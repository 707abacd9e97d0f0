"""`import mtlm_hf` is light: it registers the Auto classes and loads nothing but the configuration and the model."""

import json
import subprocess
import sys

import pytest

# What importing transformers' own Llama costs; `import mtlm_hf` may add only its own two files to it.
TRANSFORMERS_LLAMA = "import transformers.models.llama.modeling_llama, transformers.models.auto.modeling_auto"
OUR_LOADED_FILES = {"mtlm_hf", "mtlm_hf.configuration_mtlm", "mtlm_hf.modeling_mtlm"}
# Loaded only when their names are used: growth, the weights I/O, the Hub client's uploads, the tokenizer.
LOADED_ON_USE = [
    "growth_ops",
    "growth_ops.midrun",
    "growth_ops.accelerate_growth",
    "mtlm_shards",
    "sentencepiece",
    "mistral_common",
    "mtlm_hf.publishing",
    "mtlm_hf.flax_bridge",
    "mtlm_hf.original_m1",
    "mtlm_hf.llama_interop",
    "mtlm_hf.tokenization",
]

REPORT_AFTER_IMPORT = """
import json, sys
{statement}
loaded = sorted(sys.modules)
import mtlm_hf
from transformers import AutoConfig
print(json.dumps({{
    "loaded": loaded,
    "unresolved": [name for name in mtlm_hf.__all__ if getattr(mtlm_hf, name, None) is None],
    "missing_from_dir": sorted(set(mtlm_hf.__all__) - set(dir(mtlm_hf))),
    "model_type": AutoConfig.for_model("mtlm").model_type,
}}))
"""


def _report(statement: str) -> dict:
    run = subprocess.run(
        [sys.executable, "-c", REPORT_AFTER_IMPORT.format(statement=statement)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


@pytest.mark.slow  # two fresh interpreters that import torch and transformers: 10-20 s on 2 shared cores
def test_import_mtlm_hf_loads_only_what_transformers_llama_loads_plus_the_model_files():
    ours, llama = _report("import mtlm_hf"), _report(TRANSFORMERS_LLAMA)
    added = set(ours["loaded"]) - set(llama["loaded"])
    assert added == OUR_LOADED_FILES, sorted(added - OUR_LOADED_FILES)
    assert not set(LOADED_ON_USE) & set(ours["loaded"])
    # `accelerate` and the Hub client come with transformers' `modeling_utils` itself, not from us.
    assert {"accelerate", "huggingface_hub.hf_api"} & set(ours["loaded"]) <= set(llama["loaded"])
    # After the bare import every public name still resolves and the Auto registration is in place.
    assert ours["unresolved"] == [] and ours["missing_from_dir"] == []
    assert ours["model_type"] == "mtlm"
