"""Grow the depth and width of any Transformers decoder, in memory, on disk or mid-training, and leave it whole.

```python
from growth_ops import GrowthSpec, grow

spec = GrowthSpec(depth=2)  # stack: [0..L-1, 0..L-1]
model = grow(model, spec)
model = grow(model, GrowthSpec(num_layers=20, depth_method="interleave"))
model = grow(model, GrowthSpec(depth=2, depth_method="identity"))  # function-preserving insert
model = grow(model, GrowthSpec(depth_method="dus", overlap=8))  # SOLAR depth up-scaling
model = grow_depth(model, factor=2)  # keyword shortcut for grow(model, GrowthSpec(depth=2))
model = grow(model, GrowthSpec(width=2))  # hidden, heads and KV heads x2, head_dim kept: exactly the same function
model = grow(model, GrowthSpec(width=2, intermediate=3, depth=2, width_noise=1e-3))  # width, then depth
print(GrowthSpec(depth=2, depth_method="interleave").plan_depth(12))  # the plan, without a model
grow_checkpoint("tinyllama", "tinyllama-x2", spec)  # on disk, one tensor in memory at a time
```

Spec (`spec`: how to grow, a value) -> data (`anatomy`: where the layers and per-layer config live)
-> plan (`plan`: pure values) -> application (`apply`: the only code that touches a model;
`in_memory` ties spec, anatomy and plan together). Mid-training growth: `optim` (optimizer state by
name), `schedule` (LR re-warm), `midrun` (the shared core), `accelerate_growth` (`grow_prepared`),
`callback` (`GrowthCallback`). `checkpoint` grows a safetensors checkpoint on disk through the same
`rules` (`grow_checkpoint`, and the `mtlm-grow` command in `cli`). Width: `width` (the plan of a
model and its application in memory), `width_rules` (the per-tensor rules both sinks share) and
`width_checkpoint` (the on-disk driver).

Names are imported when first used (PEP 562), so `import growth_ops` loads neither torch nor
accelerate, and `GrowthSpec` and `plan_depth` work without torch installed.
"""

from __future__ import annotations

import importlib
from typing import Any

# Public name -> the submodule that defines it. A module-level `__getattr__` rather than transformers'
# `_LazyModule`, which would import transformers (and with it torch) on `import growth_ops`.
_EXPORTS = {
    "GrowthSpec": "spec",
    "GrowthPlan": "plan",
    "make_dus_plan": "plan",
    "make_explicit_plan": "plan",
    "make_identity_plan": "plan",
    "make_interleave_plan": "plan",
    "make_stack_plan": "plan",
    "plan_depth": "plan",
    "plan_growth_budget": "planner",
    "DecoderAnatomy": "anatomy",
    "discover_anatomy": "anatomy",
    "apply_plan": "apply",
    "grow": "in_memory",
    "grow_depth": "in_memory",
    "plan_growth": "in_memory",
    "CheckpointGrowth": "checkpoint",
    "grow_checkpoint": "checkpoint",
    "plan_checkpoint_growth": "checkpoint",
    "grow_optimizer_state": "optim",
    "grow_width_optimizer_state": "optim",
    "rewarm_schedule": "schedule",
    "grow_prepared": "accelerate_growth",
    "GrowthCallback": "callback",
    "WidthPlan": "width",
    "plan_width": "width",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later look-ups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
