"""Streaming safetensors I/O (mtlm_shards): resharding keeps every tensor and bounds each file; unchanged
tensors are copied byte for byte, whatever the OS offers to copy with."""

import contextlib
import dataclasses
import json
import os

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from transformers import LlamaConfig, LlamaForCausalLM
from zoo import read_tensors

from mtlm_shards import TensorCopy, read_headers, read_weight_map, reshard, split_into_shards, write_shards


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


@pytest.fixture
def mixed_checkpoint(tmp_path):
    """A file whose data is not in the order of its names: safetensors stores wider dtypes first."""
    torch.manual_seed(0)
    tensors = {
        "a.int8": torch.randint(-128, 127, (3, 5), dtype=torch.int8),
        "b.bf16": torch.randn(7, 9).to(torch.bfloat16),
        "c.fp32": torch.randn(300_000),  # larger than one chunk of zeros or of the buffered copy
        "d.scalar": torch.tensor(2.5),
    }
    folder = tmp_path / "mixed"
    folder.mkdir()
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder, tensors


def plan_copy(folder, zeroed=()):
    """Every tensor of `folder` as a `TensorCopy`, the ones named in `zeroed` written as zeros, in several files."""
    weight_map = read_weight_map(folder)
    headers = read_headers(folder, weight_map)
    tensors = {n: TensorCopy(n, f, n, *headers[n], zeroed=n in zeroed) for n, f in weight_map.items()}
    return tensors, split_into_shards(tensors, max(t.nbytes for t in tensors.values()))


def read_stored_tensors(folder, stack):
    """The tensor path: each stored tensor loaded by safetensors, as a transform that changes nothing."""
    handle = stack.enter_context(safe_open(folder / "model.safetensors", "pt"))
    return lambda tensor: (
        handle.get_tensor(tensor.source_name).zero_() if tensor.zeroed else handle.get_tensor(tensor.source_name)
    )


@pytest.mark.parametrize("os_lacks", [(), ("copy_file_range",), ("copy_file_range", "sendfile")])
def test_byte_copy_writes_the_files_the_tensor_path_writes(mixed_checkpoint, tmp_path, monkeypatch, os_lacks):
    folder, stored = mixed_checkpoint
    offsets = {
        name: stored_tensor.offset for name, stored_tensor in read_headers(folder, read_weight_map(folder)).items()
    }
    assert sorted(offsets, key=offsets.get) != sorted(offsets)  # the data is not in the names' order
    tensors, shards = plan_copy(folder, zeroed={"b.bf16", "c.fp32"})
    assert len(shards) > 1
    (tmp_path / "tensors").mkdir()
    with contextlib.ExitStack() as stack:
        write_shards(tmp_path / "tensors", folder, tensors, shards, 0, read=read_stored_tensors(folder, stack))
    for name in os_lacks:  # as on an OS or file system without these system calls
        monkeypatch.delattr(os, name)
    (tmp_path / "bytes").mkdir()
    written = write_shards(tmp_path / "bytes", folder, tensors, shards, 0)

    for path in written:
        assert path.read_bytes() == (tmp_path / "tensors" / path.name).read_bytes(), path.name
    copied = read_tensors(tmp_path / "bytes")
    assert copied.keys() == stored.keys()
    for name, tensor in stored.items():
        expected = torch.zeros_like(tensor) if name in ("b.bf16", "c.fp32") else tensor
        assert copied[name].dtype == tensor.dtype and torch.equal(copied[name], expected), name


def test_a_source_truncated_after_its_header_was_read_is_named(mixed_checkpoint, tmp_path):
    folder, _ = mixed_checkpoint
    tensors, shards = plan_copy(folder)
    os.truncate(folder / "model.safetensors", os.path.getsize(folder / "model.safetensors") - 6)
    with pytest.raises(ValueError, match=r"ends after \d+ of its \d+ bytes: the file was truncated.*fetch it again"):
        write_shards(tmp_path, folder, tensors, shards, 0)


def test_a_tensor_that_does_not_fit_its_header_is_refused(mixed_checkpoint, tmp_path):
    folder, _ = mixed_checkpoint
    tensors, shards = plan_copy(folder)
    name = "b.bf16"
    tensors[name] = dataclasses.replace(tensors[name], nbytes=tensors[name].nbytes + 2)
    with contextlib.ExitStack() as stack, pytest.raises(ValueError, match="holds 126 bytes, its header says 128"):
        write_shards(tmp_path, folder, tensors, shards, 0, read=read_stored_tensors(folder, stack))
