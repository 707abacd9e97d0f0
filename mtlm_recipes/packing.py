"""The one token packer of the recipes: documents tokenized, each ended with EOS, concatenated and cut into blocks.

As in transformers' `run_clm.py`: no BOS, no padding, and the tail that does not fill a block is dropped. The
quickstart, the growth benchmark, the M1 trainer (per `datasets.map` batch) and the M2 trainer all pack here.
"""

import numpy as np
from transformers import PreTrainedTokenizerBase


def pack_texts(
    texts: list[str], tokenizer: PreTrainedTokenizerBase, seq_len: int, dtype: np.dtype = np.int64
) -> np.ndarray:
    """Tokenize `texts` without specials, append EOS to each, concatenate, and cut into full blocks.

    Args:
        texts (`list[str]`): The documents (or lines), in order.
        tokenizer (`PreTrainedTokenizerBase`): Its `eos_token_id` ends every text.
        seq_len (`int`): Tokens per block.
        dtype (`np.dtype`, *optional*, defaults to `np.int64`): Of the returned ids (`np.int32` for JAX).

    Returns:
        `np.ndarray`: `(num_blocks, seq_len)` token ids; `num_blocks` is 0 when the texts hold fewer than
        `seq_len` tokens.
    """
    eos = tokenizer.eos_token_id
    encoded = tokenizer(texts, add_special_tokens=False)["input_ids"]
    stream = np.fromiter((token for ids in encoded for token in (*ids, eos)), dtype=dtype)
    num_blocks = len(stream) // seq_len
    return stream[: num_blocks * seq_len].reshape(num_blocks, seq_len)
