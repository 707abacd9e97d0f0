"""Streaming safetensors I/O (mtlm_shards): resharding keeps every tensor and bounds each file."""

import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaConfig, LlamaForCausalLM
from zoo import read_tensors

from mtlm_shards import reshard


@pytest.fixture
def sharded_checkpoint(tmp_path):
    """A bf16 Llama with tied embeddings saved in several shards (an index), as a Hub download looks."""
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=256,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        tie_word_embeddings=True,
    )
    folder = tmp_path / "source"
    LlamaForCausalLM(config).to(torch.bfloat16).save_pretrained(folder, max_shard_size="40KB")
    assert (folder / "model.safetensors.index.json").is_file()
    return folder


@pytest.mark.parametrize("max_shard_size", [20_000, "10MB"])
def test_reshard_writes_the_same_tensors_in_files_of_the_requested_size(sharded_checkpoint, tmp_path, max_shard_size):
    out = tmp_path / "out"
    out.mkdir()
    written = reshard(sharded_checkpoint, out, max_shard_size)

    assert sorted(written) == sorted(out.iterdir())
    source, resharded = read_tensors(sharded_checkpoint), read_tensors(out)
    assert source.keys() == resharded.keys()
    for name, tensor in source.items():
        assert resharded[name].dtype == torch.bfloat16 and torch.equal(resharded[name], tensor), name
    shards = sorted(out.glob("*.safetensors"))
    if max_shard_size == "10MB":
        assert [p.name for p in shards] == ["model.safetensors"] and len(written) == 1
        return
    index = json.loads((out / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == source.keys()
    assert index["metadata"]["total_size"] == sum(t.nbytes for t in source.values())
    assert index["metadata"]["total_parameters"] == sum(t.numel() for t in source.values())
    largest = max(t.nbytes for t in source.values())
    for shard in shards:
        data = sum(t.nbytes for t in load_file(shard).values())
        assert data <= max(max_shard_size, largest), shard.name


def test_resharded_checkpoint_loads_to_the_same_logits(sharded_checkpoint, tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    reshard(sharded_checkpoint, out, 20_000)
    (out / "config.json").write_text((sharded_checkpoint / "config.json").read_text())
    ids = torch.tensor([[1, 5, 9, 200]])
    with torch.no_grad():
        expected = LlamaForCausalLM.from_pretrained(sharded_checkpoint)(ids).logits
        got = LlamaForCausalLM.from_pretrained(out)(ids).logits
    assert torch.equal(got, expected)


def test_a_missing_shard_is_named(sharded_checkpoint, tmp_path):
    index = json.loads((sharded_checkpoint / "model.safetensors.index.json").read_text())
    lost = sorted(set(index["weight_map"].values()))[0]
    (sharded_checkpoint / lost).unlink()
    with pytest.raises(FileNotFoundError, match=rf"{lost}.*fetch the missing file"):
        reshard(sharded_checkpoint, tmp_path, 20_000)
