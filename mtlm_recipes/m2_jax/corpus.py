"""Data for the M2 trainer, as the original read it: text lines, each tokenized without specials and ended with
EOS, packed into fixed-length blocks with no BOS; batches drawn in a seeded order that is a function of the step.

Files are local `.txt` (one line per line, as the original's single text file) or `.jsonl` / `.jsonl.gz` with a
text field (the embedded Shakespeare corpus). They are read with the standard library rather than `datasets`,
so the JAX path needs nothing beyond the `jax` extra.
"""

import glob
import gzip
import json
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from transformers import PreTrainedTokenizerBase, PreTrainedTokenizerFast

from mtlm_hf import mistral_tokenizer

from ..errors import ConfigError, InputFileError
from ..packing import pack_texts
from .config import EOS_UNITS, DataConfig, TextFile


def read_documents(source: TextFile) -> Iterator[str]:
    """Yield the documents of one source: each line of a .txt file, or the text field of each JSON line."""
    files = sorted(glob.glob(source.path))
    if not files:
        raise InputFileError(f"No file matches the data path {source.path!r}: give an existing file or glob.")
    for file in files:
        opener = gzip.open if file.endswith(".gz") else open
        with opener(file, "rt", encoding="utf-8") as handle:
            if ".jsonl" not in Path(file).suffixes:
                yield from (line.rstrip("\n") for line in handle)
                continue
            for number, line in enumerate(handle, start=1):
                record = json.loads(line)
                if source.text_field not in record:
                    raise ConfigError(
                        f"{file}, line {number}, has no field {source.text_field!r} (fields: {sorted(record)}); "
                        "set text_field."
                    )
                yield record[source.text_field]


def split_units(documents: Iterator[str], eos_per: str) -> list[str]:
    """The texts that each get an EOS: every non-blank line (the original M2), or every whole document.

    Blank lines are dropped: they would add EOS tokens only, whose targets the loss excludes anyway.
    """
    if eos_per not in EOS_UNITS:
        raise ConfigError(f"eos_per must be one of {EOS_UNITS}, got {eos_per!r}.")
    if eos_per == "document":
        return [document for document in documents if document.strip()]
    return [line for document in documents for line in document.splitlines() if line.strip()]


def pack_blocks(texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int) -> np.ndarray:
    """`mtlm_recipes.packing.pack_texts` as (n, seq_len) int32 blocks (JAX's integer width), at least one.

    Raises:
        ConfigError: If the texts hold less than one block.
    """
    blocks = pack_texts(texts, tokenizer, seq_len, dtype=np.int32)
    if len(blocks) == 0:
        raise ConfigError(
            f"The data holds less than one block of seq_len={seq_len} tokens: add data or lower seq_len."
        )
    return blocks


def read_units(sources: list[TextFile], eos_per: str = "line") -> list[str]:
    """All sources read and split into EOS units."""
    if not sources:
        raise ConfigError("No data sources given: list at least one file under data.train in the config.")
    return [unit for source in sources for unit in split_units(read_documents(source), eos_per)]


def load_blocks(
    sources: list[TextFile], tokenizer: PreTrainedTokenizerBase, seq_len: int, eos_per: str = "line"
) -> np.ndarray:
    """All sources read, split into EOS units, tokenized and packed."""
    return pack_blocks(read_units(sources, eos_per), tokenizer, seq_len)


def make_tokenizer(data: DataConfig, train_units: list[str]) -> PreTrainedTokenizerFast:
    """The run's tokenizer: Mistral's, as the original, or a byte-level BPE of `data.bpe_vocab_size` pieces trained
    on the training units (the quickstart's tokenizer, so an M1 and an M2 run on the same corpus compare).

    Pad is EOS, as the original: EOS targets are then not scored.
    """
    if data.bpe_vocab_size is None:
        tokenizer = mistral_tokenizer()
    else:
        from ..compute_matched import train_tokenizer  # the one BPE recipe of the repository

        tokenizer = train_tokenizer(train_units, data.bpe_vocab_size)
    tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def batch_indices(num_blocks: int, batch_size: int, seed: int, step: int) -> np.ndarray:
    """The block indices of the batch at `step`: a fresh seeded permutation each epoch, cut into batches.

    A pure function of the step, so a resumed run reads exactly the batches an uninterrupted run reads.
    """
    batches_per_epoch = num_blocks // batch_size
    if batches_per_epoch == 0:
        raise ConfigError(
            f"The training data packs into {num_blocks} blocks, fewer than one batch ({batch_size}): add data, or "
            "lower batch_size or seq_len."
        )
    epoch, index = divmod(step, batches_per_epoch)
    order = np.random.default_rng([seed, epoch]).permutation(num_blocks)
    return order[index * batch_size : (index + 1) * batch_size]
