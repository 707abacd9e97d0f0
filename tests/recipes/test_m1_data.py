"""The M1 trainer's data path (mtlm_recipes.m1.data): local sources, blending, EOS packing, a resumable sampler."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import mtlm_hf
from mtlm_recipes.m1.config import TextSource
from mtlm_recipes.m1.data import BlockSampler, load_blend, pack


@pytest.fixture(scope="module")
def tokenizer():
    return mtlm_hf.mistral_tokenizer()


@pytest.fixture
def sources(tmp_path):
    a = tmp_path / "a.jsonl"
    a.write_text("".join(json.dumps({"content": f"Document {i} of source A. " * 5}) + "\n" for i in range(40)))
    b = tmp_path / "b.txt"
    b.write_text(
        "".join(f"Line {i} of the plain text source B, a little longer than the others.\n" for i in range(40))
    )
    c = tmp_path / "c.parquet"
    pq.write_table(pa.table({"text": [f"Parquet row {i} of source C." for i in range(40)]}), c)
    return [
        TextSource(path=str(a), weight=3.0, text_field="content"),
        TextSource(path=str(b), weight=1.0),
        TextSource(path=str(c), weight=1.0),
    ]


def test_documents_end_with_eos_and_blocks_have_the_same_length(sources, tokenizer):
    blocks = pack(load_blend(sources[1:2], streaming=False, seed=0), tokenizer, seq_len=16)
    ids = torch.tensor(blocks["input_ids"])
    assert ids.shape[1] == 16 and len(ids) > 10
    first_line = tokenizer(
        "Line 0 of the plain text source B, a little longer than the others.", add_special_tokens=False
    )
    assert ids.flatten()[: len(first_line["input_ids"]) + 1].tolist() == first_line["input_ids"] + [
        tokenizer.eos_token_id
    ]
    assert tokenizer.bos_token_id not in ids


def test_blend_draws_from_every_source(sources, tokenizer):
    blend = load_blend(sources, streaming=False, seed=0)
    texts = list(blend["text"])
    assert {t.split()[0] for t in texts} == {"Document", "Line", "Parquet"}


@pytest.mark.parametrize("streaming", [False, True])
def test_sampler_resumes_exactly_from_its_state(sources, tokenizer, streaming):
    blocks = pack(load_blend(sources, streaming=streaming, seed=0), tokenizer, seq_len=16)
    reference = BlockSampler(blocks, global_batch_size=4, seed=1)
    expected = [reference.next_batch() for _ in range(30)]  # more than one pass: epochs roll over

    first = BlockSampler(blocks, global_batch_size=4, seed=1)
    for _ in range(11):
        first.next_batch()
    state = json.loads(json.dumps(first.state_dict()))  # checkpointed state is plain data
    resumed = BlockSampler(blocks, global_batch_size=4, seed=1)
    resumed.load_state_dict(state)
    for want in expected[11:]:
        assert torch.equal(resumed.next_batch(), want)


def test_missing_source_and_missing_column_are_clear(sources):
    with pytest.raises(FileNotFoundError, match="No file matches"):
        load_blend([TextSource(path="nowhere/data.jsonl")], streaming=False, seed=0)
    with pytest.raises(ValueError, match="no column 'text'"):
        load_blend([TextSource(path=sources[0].path)], streaming=False, seed=0)


def test_too_little_data_for_one_batch_is_refused(sources, tokenizer):
    blocks = pack(load_blend(sources[1:2], streaming=False, seed=0), tokenizer, seq_len=16)
    with pytest.raises(ValueError, match="fewer than one global batch"):
        BlockSampler(blocks, global_batch_size=len(blocks) + 1, seed=0)
