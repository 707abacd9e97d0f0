"""Grow the depth of any Transformers decoder in memory, and leave it whole.

```python
from growth_ops import grow_depth, plan_depth

model = grow_depth(model, factor=2)  # stack: [0..L-1, 0..L-1]
model = grow_depth(model, num_layers=20, method="interleave")
model = grow_depth(model, factor=2, method="identity")  # function-preserving insert
model = grow_depth(model, method="dus", factor=2, overlap=8)  # SOLAR depth up-scaling
model = grow_depth(model, layer_map=[0, 1, 2, 1, 2, 3])  # explicit
print(plan_depth(num_layers=12, factor=2, method="interleave"))
grow_checkpoint("tinyllama", "tinyllama-x2", factor=2)  # on disk, one tensor in memory at a time
```

Data (`anatomy`: where the layers and per-layer config live) -> plan (`plan`: pure values) ->
application (`apply`: the only code that touches a model); `training` grows a model mid-training
(optimizer state, LR schedule, DDP wrappers; `grow_prepared`, `GrowthCallback`); `checkpoint` grows a
safetensors checkpoint on disk through the same `rules` (`grow_checkpoint`, and the `mtlm-grow` command
in `cli`), streaming tensors through `shards`.
"""

from .anatomy import DecoderAnatomy, discover_anatomy
from .apply import apply_plan, grow_depth, plan_growth
from .checkpoint import CheckpointGrowth, grow_checkpoint, plan_checkpoint_growth
from .plan import (
    GrowthPlan,
    make_dus_plan,
    make_explicit_plan,
    make_identity_plan,
    make_interleave_plan,
    make_stack_plan,
    plan_depth,
)
from .training import GrowthCallback, grow_optimizer_state, grow_prepared, rewarm_schedule

__all__ = [
    "CheckpointGrowth",
    "DecoderAnatomy",
    "GrowthCallback",
    "GrowthPlan",
    "apply_plan",
    "discover_anatomy",
    "grow_checkpoint",
    "grow_depth",
    "grow_optimizer_state",
    "grow_prepared",
    "make_dus_plan",
    "make_explicit_plan",
    "make_identity_plan",
    "make_interleave_plan",
    "make_stack_plan",
    "plan_checkpoint_growth",
    "plan_depth",
    "plan_growth",
    "rewarm_schedule",
]
