"""Streaming safetensors checkpoints: read the tensors of a (sharded) checkpoint one at a time, and write
shards one tensor at a time, so memory holds a single tensor whatever the model or shard size.

A tensor copied unchanged is never loaded: its bytes go from file to file (`os.copy_file_range`), so
a reshard or a depth growth runs at the speed of the disk. A transform (width growth) reads tensors.

A leaf package: it imports nothing of ours, so the model family (`mtlm_hf.publishing` reshards with
`reshard`) and the growth library (`growth_ops.checkpoint` grows checkpoints with it) can both use it
without depending on each other. Neither safetensors nor huggingface_hub streams a reshard one tensor at
a time (`save_torch_state_dict` takes the whole state dict), hence this module.
"""

from __future__ import annotations

import contextlib
import errno
import io
import json
import math
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from huggingface_hub import split_state_dict_into_shards_factory
from safetensors import SafetensorError, safe_open
from tqdm.auto import tqdm
from transformers.utils import SAFE_WEIGHTS_INDEX_NAME, SAFE_WEIGHTS_NAME

# Weights in formats read here (safetensors) or never loaded (pickles), and the others of the HF ecosystem.
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".h5", ".msgpack", ".gguf")
_FILENAME_PATTERN = SAFE_WEIGHTS_NAME.replace(".safetensors", "{suffix}.safetensors")
_CHUNK_BYTES = 8 * 2**20  # of zeros, or of a copy through user space where the kernel cannot copy
# What a system call that copies between files raises where the OS or the file system cannot do it (an old
# kernel, a copy across file systems, a container's seccomp filter, macOS's socket-only sendfile).
_UNSUPPORTED = {errno.ENOSYS, errno.EXDEV, errno.EINVAL, errno.EOPNOTSUPP, errno.ENOTSUP, errno.EPERM, errno.ENOTSOCK}


@dataclass(frozen=True)
class TensorCopy:
    """One tensor to write and where it comes from.

    Args:
        name (`str`): Name in the written checkpoint.
        source_file (`str`): File of the source checkpoint that holds it.
        source_name (`str`): Name in the source checkpoint.
        dtype (`str`): safetensors dtype (`"BF16"`).
        shape (`tuple[int, ...]`): Shape.
        nbytes (`int`): Size in bytes.
        source_offset (`int`): Where the stored bytes start in `source_file`, from the start of the file.
        zeroed (`bool`): Written as zeros (a residual writer of an identity-initialised layer).
    """

    name: str
    source_file: str
    source_name: str
    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    source_offset: int
    zeroed: bool


class StoredTensor(NamedTuple):
    """What a safetensors header says of one tensor; unpacks into `TensorCopy`'s fields after `source_name`."""

    dtype: str
    shape: tuple[int, ...]
    nbytes: int
    offset: int


def read_weight_map(source: Path) -> dict[str, str]:
    """`{tensor name: shard file}`, from the index or the single weights file."""
    index = source / SAFE_WEIGHTS_INDEX_NAME
    if index.is_file():
        try:
            weight_map = json.loads(index.read_text())["weight_map"]
        except (json.JSONDecodeError, KeyError, TypeError) as error:
            raise ValueError(
                f"{index} is not a safetensors index (a JSON object with a 'weight_map'): {error}; fetch it again."
            ) from None
        missing = defaultdict(list)
        for name, filename in weight_map.items():
            if not (source / filename).is_file():
                missing[filename].append(name)
        if missing:
            shown = "; ".join(f"{f} ({len(n)} tensors, e.g. {n[0]!r})" for f, n in sorted(missing.items()))
            raise FileNotFoundError(
                f"Shard file(s) named in {index.name} are missing from {source}: {shown}. The download or copy is "
                "incomplete: fetch the missing file(s) again."
            )
        return weight_map
    single = source / SAFE_WEIGHTS_NAME
    if single.is_file():
        with open_shard(single) as handle:
            return dict.fromkeys(handle.keys(), SAFE_WEIGHTS_NAME)
    others = sorted(p.name for p in source.iterdir() if p.name.endswith(WEIGHT_SUFFIXES))
    raise FileNotFoundError(
        f"{source} has no {SAFE_WEIGHTS_NAME} or {SAFE_WEIGHTS_INDEX_NAME}"
        + (f" (it holds {others})" if others else "")
        + ": growth_ops reads safetensors checkpoints only (pickles are never loaded). Convert one with "
        "`AutoModelForCausalLM.from_pretrained(src).save_pretrained(new_folder)`."
    )


@contextlib.contextmanager
def open_shard(path: Path):
    """`safe_open` a shard, reading with `pread` where safetensors offers it (>= 0.8): a memory map would keep
    every page read resident in this process, so memory would grow with the model instead of one tensor."""
    try:
        try:
            handle = safe_open(path, framework="pt", backend="pread")
        except TypeError:
            handle = safe_open(path, framework="pt")
    except SafetensorError as error:
        raise ValueError(
            f"{path} is not a readable safetensors file ({error}): it is truncated or damaged (an interrupted "
            "download or copy, or a Git LFS pointer?); fetch it again."
        ) from None
    with handle:
        yield handle


def read_headers(source: Path, weight_map: dict[str, str]) -> dict[str, StoredTensor]:
    """Dtype, shape, size and file offset of every tensor of the index, from the headers only."""
    by_file = defaultdict(list)
    for name, filename in weight_map.items():
        by_file[filename].append(name)
    headers = {}
    for filename, names in by_file.items():
        with open_shard(source / filename) as handle:  # checks the header against the file's size
            held = set(handle.keys())
        absent = [name for name in names if name not in held]
        if absent:
            raise ValueError(
                f"The index of {source} places {len(absent)} tensor(s) in {filename} (e.g. {absent[0]!r}) that "
                "the file does not hold: the index and the shards come from different saves; fetch them again."
            )
        header, data_start = _read_raw_header(source / filename)
        for name in names:
            entry = header[name]
            start, end = entry["data_offsets"]
            headers[name] = StoredTensor(entry["dtype"], tuple(entry["shape"]), end - start, data_start + start)
    return headers


def _read_raw_header(path: Path) -> tuple[dict, int]:
    """The JSON header of a safetensors file and where its data starts. Read by hand: safetensors tells no
    tensor's offset in the file. The format: an 8-byte little-endian header size, then the header."""
    with open(path, "rb") as file:
        size = int.from_bytes(file.read(8), "little")
        return json.loads(file.read(size)), 8 + size


def split_into_shards(tensors: dict[str, TensorCopy], max_shard_size: int | str) -> dict[str, list[str]]:
    """`{file name: tensor names}` of at most `max_shard_size` each, named as `save_pretrained` names shards."""
    try:
        split = split_state_dict_into_shards_factory(
            tensors,
            get_storage_size=lambda tensor: tensor.nbytes,
            filename_pattern=_FILENAME_PATTERN,
            max_shard_size=max_shard_size,
        )
    except ValueError as error:
        raise ValueError(
            f"max_shard_size={max_shard_size!r} is not a size: give bytes or a string such as '2GB' or '500MB' ({error})."
        ) from None
    return dict(split.filename_to_tensors)


def write_shards(
    folder: Path,
    source: Path,
    tensors: dict[str, TensorCopy],
    shards: dict[str, list[str]],
    total_parameters: int,
    progress: bool = False,
    description: str = "Writing shards",
    read: Callable[[TensorCopy], torch.Tensor | None] | None = None,
) -> list[Path]:
    """Write `shards` (and their index when there are several) into `folder`, reading `tensors` from `source`.

    `read` gives the data of each tensor as it is written (a transform such as width growth), or `None` for
    a tensor written as stored. Without it, and where it gives `None`, each tensor's stored bytes are copied
    from its source file (zeros when its `TensorCopy` says so), and no tensor is built. Every file is read
    back to check it holds what was written. Returns the files written.
    """
    total_size = sum(tensor.nbytes for tensor in tensors.values())
    bar = tqdm(total=total_size, unit="B", unit_scale=True, desc=description, disable=not progress)
    with bar, contextlib.ExitStack() as stack:
        copy_bytes = _ByteCopier(source, stack)
        write_data = copy_bytes if read is None else _TensorWriter(read, copy_bytes)
        for filename, names in shards.items():
            bar.set_postfix_str(filename)
            _write_shard(folder / filename, [tensors[n] for n in names], write_data, bar.update)
    written = [folder / filename for filename in shards]
    if len(shards) > 1:
        index = {
            "metadata": {"total_parameters": total_parameters, "total_size": total_size},
            "weight_map": {name: filename for filename, names in shards.items() for name in names},
        }
        (folder / SAFE_WEIGHTS_INDEX_NAME).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        written.append(folder / SAFE_WEIGHTS_INDEX_NAME)
    for filename, names in shards.items():
        with open_shard(folder / filename) as handle:
            if set(handle.keys()) != set(names):
                raise OSError(f"{folder / filename} does not hold the tensors written to it; the disk may be failing.")
    return written


def reshard(source: Path, destination: Path, max_shard_size: int | str, progress: bool = False) -> list[Path]:
    """Write the weights of checkpoint folder `source` into `destination` as shards of at most `max_shard_size`.

    The tensors, their names and dtypes are unchanged; only the files they are grouped in change. Unlike
    loading the state dict and saving it again (`save_torch_state_dict`), memory holds one tensor at a time.
    Returns the files written (shards and index).
    """
    weight_map = read_weight_map(source)
    headers = read_headers(source, weight_map)
    tensors = {
        name: TensorCopy(name, filename, name, *headers[name], zeroed=False) for name, filename in weight_map.items()
    }
    parameters = sum(math.prod(tensor.shape) for tensor in tensors.values())
    shards = split_into_shards(tensors, max_shard_size)
    return write_shards(destination, source, tensors, shards, parameters, progress, description="Resharding")


def _write_shard(
    path: Path,
    tensors: list[TensorCopy],
    write_data: Callable[[io.FileIO, TensorCopy], None],
    advance: Callable[[int], object],
) -> None:
    """Stream one safetensors file to disk, one tensor at a time.

    Written by hand because safetensors' writers (`save_file`, `serialize_file`) need every tensor of a
    file in memory at once. The format is safetensors': an 8-byte little-endian header size, a JSON
    header (dtype, shape, data offsets of every tensor, padded with spaces to 8 bytes so that the data
    is aligned), then the tensors' bytes back to back. The caller reads the file back with `safe_open`.
    """
    header: dict[str, dict] = {"__metadata__": {"format": "pt"}}
    offset = 0
    for tensor in tensors:
        header[tensor.name] = {
            "dtype": tensor.dtype,
            "shape": list(tensor.shape),
            "data_offsets": [offset, offset + tensor.nbytes],
        }
        offset += tensor.nbytes
    encoded = json.dumps(header, separators=(",", ":")).encode()
    encoded += b" " * (-len(encoded) % 8)
    # Unbuffered: the byte copy writes through the file descriptor, at the file's position.
    with open(path, "wb", buffering=0) as file:
        _write_all(file, len(encoded).to_bytes(8, "little") + encoded)
        for tensor in tensors:
            write_data(file, tensor)
            advance(tensor.nbytes)


class _TensorWriter:
    """Writes the bytes of the tensor `read` gives (a transform of the stored tensor); `as_stored` writes the
    tensors it gives `None` for."""

    def __init__(
        self, read: Callable[[TensorCopy], torch.Tensor | None], as_stored: Callable[[io.FileIO, TensorCopy], None]
    ) -> None:
        self.read, self.as_stored = read, as_stored

    def __call__(self, file: io.FileIO, tensor: TensorCopy) -> None:
        data = self.read(tensor)
        if data is None:
            self.as_stored(file, tensor)
            return
        data = data.contiguous().reshape(-1).view(torch.uint8).numpy()
        if data.nbytes != tensor.nbytes:
            raise ValueError(
                f"{tensor.source_name} in {tensor.source_file} holds {data.nbytes} bytes, its header says "
                f"{tensor.nbytes}: the shard is damaged; fetch it again."
            )
        _write_all(file, memoryview(data))


class _ByteCopier:
    """Writes a stored tensor by copying its byte range from its source file, never building a tensor.

    By hand because safetensors has no API that copies a tensor's bytes between files. The copy runs in
    the kernel where it can (`copy_file_range`, else `sendfile`), and through a buffer of a few MB where
    neither works (another OS or file system). The source files stay open until `stack` closes.
    """

    def __init__(self, source: Path, stack: contextlib.ExitStack) -> None:
        self.source, self.stack = source, stack
        self.files: dict[str, io.FileIO] = {}

    def __call__(self, file: io.FileIO, tensor: TensorCopy) -> None:
        if tensor.zeroed:
            _write_zeros(file, tensor.nbytes)
            return
        if tensor.source_file not in self.files:
            path = self.source / tensor.source_file
            self.files[tensor.source_file] = self.stack.enter_context(open(path, "rb", buffering=0))
        source, offset, count = self.files[tensor.source_file], tensor.source_offset, tensor.nbytes
        copied = 0
        for name, call in _KERNEL_COPIES.items():
            if hasattr(os, name):
                copied += _copy_in_kernel(call, source.fileno(), file.fileno(), offset + copied, count - copied)
        copied += _copy_through_buffer(source, file, offset + copied, count - copied)
        if copied != count:
            raise ValueError(
                f"{tensor.source_name} in {self.source / tensor.source_file} ends after {copied} of its "
                f"{count} bytes: the file was truncated after its header was read (is something else "
                "writing it?); fetch it again."
            )


# The system calls that copy between files in the kernel, as (source fd, destination fd, source offset, count)
# -> bytes copied; both write at the destination's position.
_KERNEL_COPIES = {
    "copy_file_range": lambda source, destination, offset, count: os.copy_file_range(
        source, destination, count, offset
    ),
    "sendfile": lambda source, destination, offset, count: os.sendfile(destination, source, offset, count),
}


def _copy_in_kernel(
    copy: Callable[[int, int, int, int], int], source: int, destination: int, offset: int, count: int
) -> int:
    """Run `copy` until `count` bytes are copied, the source ends, or the OS refuses the call; the bytes copied."""
    done = 0
    while done < count:
        try:
            copied = copy(source, destination, offset + done, count - done)
        except OSError as error:
            if error.errno not in _UNSUPPORTED:
                raise
            break
        if copied == 0:  # the end of the source, or a file system that copies nothing: the buffer decides
            break
        done += copied
    return done


def _copy_through_buffer(source: io.FileIO, destination: io.FileIO, offset: int, count: int) -> int:
    buffer, done = memoryview(bytearray(min(count, _CHUNK_BYTES))), 0
    source.seek(offset)
    while done < count:
        read = source.readinto(buffer[: count - done])
        if not read:
            break
        _write_all(destination, buffer[:read])
        done += read
    return done


def _write_zeros(file: io.FileIO, count: int) -> None:
    zeros = memoryview(bytes(min(count, _CHUNK_BYTES)))
    for start in range(0, count, len(zeros)):
        _write_all(file, zeros[: count - start])


def _write_all(file: io.FileIO, data: bytes | memoryview) -> None:
    """An unbuffered write may write part of the data (Linux writes at most about 2 GB at once)."""
    data = memoryview(data).cast("B")
    while data:
        data = data[file.write(data) :]
