"""Training FLOPs per token, one count for every recipe: 6 x (non-embedding parameters + hidden x vocab).

The forward and backward matmul FLOPs of a decoder (the formula of ../shared/GROWTH_STUDY.md): the
compute-matched runs spend budgets in it, and the M1 trainer's MFU divides by it.
"""

import torch

FLOP_FORMULA = "6 * (non-embedding parameters + hidden_size * vocab_size) per training token"


def flops_per_token(model: torch.nn.Module) -> int:
    """6 * (non-embedding parameters + hidden * vocab): the forward and backward matmul FLOPs."""
    config = model.config
    non_embedding = count_non_embedding_parameters(model)
    return 6 * (non_embedding + config.hidden_size * config.vocab_size)


def count_non_embedding_parameters(model: torch.nn.Module) -> int:
    """Parameters outside the input embedding (and the output head when it is a separate matrix)."""
    non_embedding = sum(p.numel() for p in model.parameters()) - model.get_input_embeddings().weight.numel()
    if not model.config.tie_word_embeddings:
        non_embedding -= model.get_output_embeddings().weight.numel()
    return non_embedding
