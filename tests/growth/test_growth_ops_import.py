"""`import growth_ops` is light: names resolve when first used, and planning works without torch."""

import json
import subprocess
import sys
import textwrap

import pytest

import growth_ops

# As where torch is not installed: a None entry in sys.modules makes `import torch` raise ModuleNotFoundError.
_BLOCK_TORCH = "import sys; sys.modules['torch'] = None\n"

HEAVY = ("torch", "accelerate", "transformers")


def run(code: str, block_torch: bool = False) -> dict:
    """Run `code` in a fresh interpreter; its last line of stdout is JSON."""
    script = (_BLOCK_TORCH if block_torch else "") + textwrap.dedent(code)
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_import_growth_ops_loads_no_torch_accelerate_or_transformers():
    loaded = run(f"import sys, json, growth_ops; print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))")
    assert loaded == []


def test_spec_and_plans_work_where_torch_cannot_be_imported():
    result = run(
        """
        import json
        import growth_ops.plan, growth_ops.spec
        from growth_ops import GrowthSpec, plan_depth
        try:
            import torch
            torch_importable = True
        except ModuleNotFoundError:
            torch_importable = False
        spec = GrowthSpec.from_json(GrowthSpec(depth=2, depth_method="interleave").to_json())
        print(json.dumps({"torch": torch_importable, "spec": list(spec.plan_depth(2).sources),
                          "plan": list(plan_depth(2, factor=2).sources)}))
        """,
        block_torch=True,
    )
    assert result == {"torch": False, "spec": [0, 0, 1, 1], "plan": [0, 1, 0, 1]}


def test_in_memory_and_on_disk_growth_need_no_accelerate():
    # transformers' modeling code imports accelerate whenever it is installed, so "not needed" is checked
    # where it is not installed, as for torch above (transformers then sees it as unavailable).
    result = run(
        """
        import sys, json
        sys.modules["accelerate"] = None
        from transformers import AutoModelForCausalLM, LlamaConfig
        from growth_ops import grow_checkpoint, grow_depth
        config = LlamaConfig(vocab_size=99, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                             num_attention_heads=4)
        model = grow_depth(AutoModelForCausalLM.from_config(config), factor=2)
        print(json.dumps({"layers": len(model.model.layers),
                          "midrun": [m for m in ("growth_ops.midrun", "growth_ops.callback") if m in sys.modules]}))
        """
    )
    assert result == {"layers": 4, "midrun": []}


def test_every_public_name_resolves_and_is_listed():
    assert set(growth_ops.__all__) <= set(dir(growth_ops))
    for name in growth_ops.__all__:
        assert getattr(growth_ops, name).__name__ == name
    with pytest.raises(AttributeError, match="has no attribute 'grow_width'"):
        growth_ops.grow_width  # noqa: B018
