"""Data for the M1 trainer: a weighted blend of text sources, tokenized, EOS-separated and packed.

Sources are Hub dataset ids (read with `datasets`, optionally streaming, for users with a network)
or local `.txt` / `.jsonl` / `.json` / `.parquet` files and globs (optionally compressed).
"""

import glob
import itertools
from pathlib import Path

import torch
from datasets import Dataset, IterableDataset, interleave_datasets, load_dataset
from transformers import PreTrainedTokenizerBase

from ..errors import ConfigError, InputFileError
from ..packing import pack_texts
from .config import DataConfig, TextSource

_LOCAL_BUILDERS = {".txt": "text", ".jsonl": "json", ".json": "json", ".parquet": "parquet"}
_COMPRESSION_SUFFIXES = {".gz", ".bz2", ".xz", ".zst", ".lz4"}


def _local_builder(path: str) -> str | None:
    """The `datasets` builder for a local path ("json" for `x.jsonl.gz`), or None for a Hub id."""
    suffixes = [s for s in Path(path).suffixes if s not in _COMPRESSION_SUFFIXES]
    return _LOCAL_BUILDERS.get(suffixes[-1]) if suffixes else None


def load_source(source: TextSource, streaming: bool) -> Dataset | IterableDataset:
    """Load one source as a dataset with a single `text` column."""
    builder = _local_builder(source.path)
    if builder is not None:
        files = sorted(glob.glob(source.path))
        if not files:
            raise InputFileError(
                f"No file matches the data path {source.path!r}. Give an existing .txt/.jsonl/.json/.parquet file "
                "or glob, or a Hub dataset id."
            )
        dataset = load_dataset(builder, data_files=files, split="train", streaming=streaming)
    else:
        dataset = load_dataset(source.path, source.name, split=source.split, streaming=streaming)
    columns = dataset.column_names
    if columns is not None and source.text_field not in columns:
        raise ConfigError(f"{source.path!r} has no column {source.text_field!r} (columns: {columns}); set text_field.")
    dataset = dataset.select_columns([source.text_field])
    return dataset.rename_column(source.text_field, "text") if source.text_field != "text" else dataset


def load_blend(sources: list[TextSource], streaming: bool, seed: int) -> Dataset | IterableDataset:
    """Interleave the sources with probabilities proportional to their weights."""
    if not sources:
        raise ConfigError("No data sources given: list at least one under data.train in the config.")
    datasets = [load_source(source, streaming) for source in sources]
    if len(datasets) == 1:
        return datasets[0]
    total = sum(source.weight for source in sources)
    return interleave_datasets(
        datasets,
        probabilities=[source.weight / total for source in sources],
        seed=seed,
        stopping_strategy="all_exhausted",
    )


def pack(
    dataset: Dataset | IterableDataset, tokenizer: PreTrainedTokenizerBase, seq_len: int
) -> Dataset | IterableDataset:
    """Pack every map batch of documents with `mtlm_recipes.packing.pack_texts` into `seq_len` blocks.

    As in transformers' `run_clm.py`, the tail of each map batch that does not fill a block is dropped
    (at most `seq_len - 1` tokens per 1,000 documents).
    """

    def tokenize_and_pack(batch: dict) -> dict:
        return {"input_ids": pack_texts(batch["text"], tokenizer, seq_len).tolist()}

    return dataset.map(tokenize_and_pack, batched=True, batch_size=1000, remove_columns=["text"])


def load_training_data(
    cfg: DataConfig, tokenizer: PreTrainedTokenizerBase, seed: int
) -> tuple[Dataset | IterableDataset, torch.Tensor]:
    """Packed training blocks, and at most `cfg.val_blocks` validation blocks as one tensor."""
    blocks = pack(load_blend(cfg.train, cfg.streaming, seed), tokenizer, cfg.seq_len)
    if cfg.validation:
        val_blocks = pack(load_blend(cfg.validation, False, seed), tokenizer, cfg.seq_len)
    elif cfg.streaming:
        val_blocks, blocks = blocks.take(cfg.val_blocks), blocks.skip(cfg.val_blocks)
    else:
        val_blocks = blocks.select(range(min(cfg.val_blocks, len(blocks))))
        blocks = blocks.select(range(len(val_blocks), len(blocks)))
    val = [row["input_ids"] for row in itertools.islice(val_blocks, cfg.val_blocks)]
    if not val:
        raise ConfigError("The validation data packs into no block: give more validation text or a smaller seq_len.")
    return blocks, torch.tensor(val)


class BlockSampler:
    """Serves global batches of packed blocks in a seeded order and checkpoints its position.

    Map-style data is read in a fresh random permutation each epoch (epoch, offset); streaming data
    in stream order, its position taken from `IterableDataset.state_dict()`. Either way a resumed
    run sees exactly the batches an uninterrupted run would have seen.
    """

    def __init__(self, blocks: Dataset | IterableDataset, global_batch_size: int, seed: int):
        self.blocks = blocks
        self.global_batch_size = global_batch_size
        self.seed = seed
        self.streaming = isinstance(blocks, IterableDataset)
        self.epoch, self.offset = 0, 0
        if not self.streaming:
            self.blocks = blocks.with_format("torch")
            if len(self.blocks) < global_batch_size:
                raise ConfigError(
                    f"The training data packs into {len(self.blocks)} blocks, fewer than one global batch "
                    f"({global_batch_size}): add data, or lower batch_size or seq_len."
                )
            self._order = self._permutation()
        self._stream = None

    def _permutation(self) -> torch.Tensor:
        return torch.randperm(len(self.blocks), generator=torch.Generator().manual_seed(self.seed + self.epoch))

    def next_batch(self) -> torch.Tensor:
        """The next global batch, shape (global_batch_size, seq_len)."""
        if self.streaming:
            return self._next_streamed()
        if self.offset + self.global_batch_size > len(self._order):
            self.epoch, self.offset = self.epoch + 1, 0
            self._order = self._permutation()
        indices = self._order[self.offset : self.offset + self.global_batch_size]
        self.offset += self.global_batch_size
        return self.blocks[indices.tolist()]["input_ids"]

    def _next_streamed(self) -> torch.Tensor:
        rows = []
        while len(rows) < self.global_batch_size:
            if self._stream is None:
                self._stream, self._pass_yielded = iter(self.blocks), False
            row = next(self._stream, None)
            if row is None:
                if not self._pass_yielded:
                    raise ConfigError("The streamed training data yields no block: check the sources and seq_len.")
                self.epoch, self._stream = self.epoch + 1, None
                self.blocks.set_epoch(self.epoch)
                continue
            self._pass_yielded = True
            rows.append(torch.tensor(row["input_ids"]))
        return torch.stack(rows)

    def state_dict(self) -> dict:
        state = {"epoch": self.epoch, "offset": self.offset}
        if self.streaming:
            state["stream"] = self.blocks.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.epoch, self.offset = state["epoch"], state["offset"]
        if self.streaming:
            self.blocks.load_state_dict(state["stream"])
            self._stream, self._pass_yielded = iter(self.blocks), True
        else:
            self._order = self._permutation()
