"""The one token packer (mtlm_recipes.packing), and the light `import mtlm_recipes`."""

import json
import subprocess
import sys

import numpy as np
import pytest

import mtlm_hf
from mtlm_recipes.packing import pack_texts


@pytest.fixture(scope="module")
def tokenizer():
    return mtlm_hf.mistral_tokenizer()


def test_texts_end_with_eos_and_only_full_blocks_are_kept(tokenizer):
    texts = ["The future of AI is", "bright.", "Short"]
    encoded = [tokenizer(text, add_special_tokens=False)["input_ids"] for text in texts]
    stream = [token for ids in encoded for token in (*ids, tokenizer.eos_token_id)]
    blocks = pack_texts(texts, tokenizer, seq_len=4)
    assert blocks.shape == (len(stream) // 4, 4) and blocks.dtype == np.int64
    assert blocks.flatten().tolist() == stream[: blocks.size]
    assert tokenizer.bos_token_id not in blocks
    assert pack_texts(texts, tokenizer, seq_len=4, dtype=np.int32).dtype == np.int32


def test_fewer_tokens_than_a_block_give_no_block(tokenizer):
    assert pack_texts(["Hi"], tokenizer, seq_len=64).shape == (0, 64)


def test_import_mtlm_recipes_loads_no_framework():
    code = (
        "import json, sys, mtlm_recipes, mtlm_recipes.run_config, mtlm_recipes.errors; "
        "print(json.dumps(sorted(m for m in ('torch', 'transformers', 'jax', 'datasets', 'accelerate') "
        "if m in sys.modules)))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == []


def test_only_the_m2_subpackage_imports_jax():
    code = "import sys, mtlm_recipes.m1.data, mtlm_recipes.compute_matched, mtlm_recipes.cards; print('jax' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    assert result.stdout.split()[-1] == "False"
