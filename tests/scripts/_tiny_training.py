"""What the growth scripts share: a tiny MTLM with examples/m1/train.py's optimizer and schedule, and the growth.

The scripts are run as files, so this module is imported as `from _tiny_training import ...` (a script's own
folder is on `sys.path`).
"""

import torch
from transformers import AutoModelForCausalLM
from transformers.optimization import get_cosine_with_min_lr_schedule_with_warmup

import mtlm_hf
from growth_ops import GrowthSpec

GROW_AT = 2  # optimizer steps before growth
TOTAL_STEPS = 5
ACCUM = 2  # micro-batches per optimizer step
SPEC = GrowthSpec(depth=2, depth_method="stack")  # 2 -> 4 layers: layer 2 comes from 0, layer 3 from 1
WIDTH_SPEC = GrowthSpec(width=2, depth=2, depth_method="stack")  # hidden, heads and MLP x2, then as SPEC
SPECS = {"depth": SPEC, "width": WIDTH_SPEC}
NEW_LAYERS = ("model.layers.2.", "model.layers.3.")


def tiny_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return AutoModelForCausalLM.from_config(mtlm_hf.MTLMConfig.from_preset("m1-tiny"))


def optimizer_and_schedule(model: torch.nn.Module) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW with a weight-decay split and a cosine schedule, as the M1 trainer builds them."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.01}, {"params": no_decay, "weight_decay": 0.0}],
        lr=1e-2,
        betas=(0.9, 0.95),
    )
    return optimizer, get_cosine_with_min_lr_schedule_with_warmup(optimizer, 1, TOTAL_STEPS, min_lr_rate=0.1)
