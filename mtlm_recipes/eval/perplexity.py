"""WikiText-2 perplexity by sliding windows, the recipe of Transformers' perplexity guide (`examples/eval/perplexity.py`
is the command line; its docstring gives the recipe and how token accounting differs from the guide)."""

import math
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedModel

from ..errors import ConfigError, InputFileError
from ..progress import MIN_INTERVAL_S

DEFAULT_STRIDE = 512


def load_wikitext(text_file: Path | None = None, from_hub: bool = False) -> str:
    """Return the WikiText-2 raw test text, joined with blank lines as in the perplexity guide.

    Args:
        text_file (`Path`, *optional*): a local copy of the joined text (UTF-8).
        from_hub (`bool`, *optional*, defaults to `False`): read the `wikitext` dataset from the Hub instead.

    Returns:
        `str`: the text to score.

    Raises:
        ConfigError: if neither or both sources are given.
        InputFileError: if `text_file` does not exist.
    """
    if (text_file is None) == (not from_hub):
        raise ConfigError("Give exactly one source: --text-file PATH (local copy) or --from-hub (needs a network).")
    if text_file is not None:
        if not Path(text_file).is_file():
            raise InputFileError(
                f"no text file {text_file}: give the joined raw WikiText-2 test text, e.g. "
                "../shared/data/wikitext2/wikitext-2-raw-v1.test.hf-joined.txt, or --from-hub."
            )
        return Path(text_file).read_text(encoding="utf-8")
    from datasets import load_dataset  # only this path needs `datasets`

    return "\n\n".join(load_dataset("wikitext", "wikitext-2-raw-v1", split="test")["text"])


def model_context(model: PreTrainedModel) -> int:
    """The number of positions the model was trained for (`max_position_embeddings` or `n_positions`)."""
    config = model.config
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length"):
        if getattr(config, name, None):
            return int(getattr(config, name))
    raise ConfigError(f"{type(config).__name__} names no context length; pass --max-length.")


@torch.no_grad()
def sliding_window_nll(
    model: PreTrainedModel, input_ids: torch.Tensor, max_length: int, stride: int = DEFAULT_STRIDE
) -> tuple[float, int]:
    """Sum the negative log-likelihood of a token sequence scored in overlapping windows.

    Args:
        model (`PreTrainedModel`): a causal LM; its `loss` must be the mean over labels that are not -100.
        input_ids (`torch.Tensor`): shape `(1, seq_len)`.
        max_length (`int`): tokens in a window.
        stride (`int`, *optional*, defaults to 512): tokens a window advances; at most `max_length`.

    Returns:
        `tuple[float, int]`: total nll in nats and the number of tokens it covers: every token but the first
        when `stride < max_length`; with `stride == max_length` each window's first token goes unscored, as in
        the guide.

    Raises:
        ConfigError: if `stride` is not in `[1, max_length]`.
        ValueError: if the input is not one row.
    """
    if not 1 <= stride <= max_length:
        raise ConfigError(f"--stride ({stride}) must be between 1 and the window length ({max_length}).")
    if input_ids.dim() != 2 or input_ids.size(0) != 1:
        raise ValueError(f"input_ids must have shape (1, seq_len), got {tuple(input_ids.shape)}.")
    device = next(model.parameters()).device
    seq_len = input_ids.size(1)
    nll_sum, scored = 0.0, 0
    prev_end = 0
    for begin in tqdm(range(0, seq_len, stride), desc="windows", leave=False, mininterval=MIN_INTERVAL_S):
        end = min(begin + max_length, seq_len)
        target_len = end - prev_end  # tokens no earlier window scored
        window = input_ids[:, begin:end].to(device)
        labels = window.clone()
        labels[:, :-target_len] = -100
        loss = model(window, labels=labels).loss
        window_scored = int((labels[:, 1:] != -100).sum())  # the labels left after the model's internal shift
        nll_sum += loss.double().item() * window_scored
        scored += window_scored
        prev_end = end
        if end == seq_len:
            break
    return nll_sum, scored


def perplexity_report(
    model: PreTrainedModel,
    tokenizer,
    text: str,
    max_length: int | None = None,
    stride: int = DEFAULT_STRIDE,
    tokenizer_name: str | None = None,
) -> dict:
    """Score `text` and return token perplexity, bits per byte and word perplexity with what they rest on.

    Args:
        model (`PreTrainedModel`): the causal LM, in eval mode.
        tokenizer: the model's tokenizer (named in the report).
        text (`str`): the text to score.
        max_length (`int`, *optional*): window length; defaults to the model's context.
        stride (`int`, *optional*, defaults to 512): window advance, capped at `max_length`.
        tokenizer_name (`str`, *optional*): how to name the tokenizer in the report (e.g.
            `"Mistral-7B-v0.1"`); defaults to its `name_or_path`.

    Returns:
        `dict`: the figures and their counts (tokens, scored tokens, bytes, words, nll).
    """
    max_length = max_length or model_context(model)
    stride = min(stride, max_length)
    input_ids = tokenizer(text, return_tensors="pt").input_ids
    starts_with_bos = tokenizer.bos_token_id is not None and int(input_ids[0, 0]) == tokenizer.bos_token_id
    nll, scored = sliding_window_nll(model, input_ids, max_length, stride)
    num_bytes, num_words = len(text.encode("utf-8")), len(text.split())
    return {
        "token_perplexity": math.exp(nll / scored),
        "bits_per_byte": nll / math.log(2) / num_bytes,
        "word_perplexity": math.exp(nll / num_words),
        "total_nll_nats": nll,
        "tokens": input_ids.size(1),
        "scored_tokens": scored,
        "bytes": num_bytes,
        "words": num_words,
        "max_length": max_length,
        "stride": stride,
        "tokenizer": {
            "name": tokenizer_name or tokenizer.name_or_path,
            "name_or_path": tokenizer.name_or_path,
            "class": type(tokenizer).__name__,
            "vocab_size": len(tokenizer),
            "first_token_is_bos": starts_with_bos,
        },
    }
