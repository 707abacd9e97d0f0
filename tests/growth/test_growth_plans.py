"""Growth plans are pure values: no model, no torch."""

import json
import subprocess
import sys

import pytest

from growth_ops import (
    GrowthPlan,
    make_dus_plan,
    make_explicit_plan,
    make_identity_plan,
    make_interleave_plan,
    make_stack_plan,
    plan_depth,
)

ALL_PLANS = [
    plan_depth(num_layers=4, factor=2),
    plan_depth(num_layers=12, new_num_layers=20, method="interleave"),
    plan_depth(num_layers=4, factor=2, method="identity"),
    plan_depth(num_layers=4, method="identity", positions=[0, 0, 3]),
    plan_depth(num_layers=32, method="dus", factor=2, overlap=8),
    plan_depth(num_layers=4, layer_map=[0, 1, 2, 1, 2, 3]),
]


def test_plan_module_imports_no_torch():
    # A plain import, through the package: `growth_ops/__init__` resolves its names lazily.
    code = "import sys, growth_ops.plan; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("plan", ALL_PLANS, ids=lambda p: p.method)
def test_plan_survives_json_round_trip_and_is_hashable(plan):
    restored = GrowthPlan.from_json(plan.to_json())
    assert restored == plan
    assert hash(restored) == hash(plan)
    assert json.loads(plan.to_json())["sources"] == list(plan.sources)


@pytest.mark.parametrize("plan", ALL_PLANS, ids=lambda p: p.method)
def test_plan_prints_one_line_per_new_layer(plan):
    text = str(plan)
    assert text.startswith(f"GrowthPlan({plan.method}: {plan.source_num_layers} -> {plan.num_layers} layers")
    assert len(text.splitlines()) == plan.num_layers + 3


def test_plan_is_frozen():
    plan = make_stack_plan(2, 4)
    with pytest.raises(AttributeError):
        plan.sources = (0,)


def test_stack_repeats_the_whole_model():
    plan = make_stack_plan(4, 8)
    assert plan.sources == (0, 1, 2, 3, 0, 1, 2, 3)
    assert plan.inits == ("copy",) * 8
    assert plan.kept_positions == (0, 1, 2, 3)
    assert plan.new_positions == (4, 5, 6, 7)
    assert plan.ranges == ((0, 4), (0, 4))


def test_non_integer_stack_appends_the_top_layers():
    assert make_stack_plan(12, 20).sources == tuple(range(12)) + tuple(range(4, 12))
    assert make_stack_plan(4, 11).sources == (0, 1, 2, 3, 0, 1, 2, 3, 1, 2, 3)


def test_interleave_follows_each_layer_by_its_copies():
    assert make_interleave_plan(3, 6).sources == (0, 0, 1, 1, 2, 2)
    assert make_interleave_plan(2, 6).sources == (0, 0, 0, 1, 1, 1)
    assert make_interleave_plan(3, 6).new_positions == (1, 3, 5)


def test_non_integer_interleave_spreads_the_copies_evenly():
    plan = make_interleave_plan(12, 20)
    copied = [layer for layer in range(12) if plan.sources.count(layer) == 2]
    assert copied == [1, 2, 4, 5, 7, 8, 10, 11]
    assert plan.num_layers == 20
    assert list(plan.sources) == sorted(plan.sources)


def test_identity_inserts_zero_residual_copies_after_each_group():
    # LLaMA-Pro: 32 -> 40, one copy after every fourth layer.
    plan = make_identity_plan(32, 40)
    inserted = [j for j, rule in enumerate(plan.inits) if rule == "zero_residual"]
    assert [plan.sources[j] for j in inserted] == [3, 7, 11, 15, 19, 23, 27, 31]
    assert all(plan.sources[j - 1] == plan.sources[j] for j in inserted)
    assert plan.new_positions == tuple(inserted)
    assert [s for s, rule in zip(plan.sources, plan.inits, strict=True) if rule == "copy"] == list(range(32))


def test_identity_positions_name_the_layer_each_copy_follows():
    plan = make_identity_plan(4, positions=[0, 0, 3])
    assert plan.sources == (0, 0, 0, 1, 2, 3, 3)
    assert plan.inits == ("copy", "zero_residual", "zero_residual", "copy", "copy", "copy", "zero_residual")
    assert plan_depth(num_layers=4, new_num_layers=7, method="identity", positions=[0, 0, 3]) == plan


def test_dus_keeps_the_bottom_of_one_copy_and_the_top_of_another():
    plan = make_dus_plan(32, 8)  # SOLAR 10.7B
    assert plan.num_layers == 48
    assert plan.sources == tuple(range(24)) + tuple(range(8, 32))
    # Layers 24..31 appear only in the second copy, so they are the kept ones there.
    assert plan.ranges == ((0, 24), (8, 24), (24, 32))
    assert plan.new_positions == tuple(range(24, 40))
    assert plan_depth(num_layers=32, new_num_layers=48, method="dus") == plan
    assert make_dus_plan(4, 0).sources == (0, 1, 2, 3, 0, 1, 2, 3)


def test_explicit_map_is_taken_as_given():
    plan = make_explicit_plan(4, [0, 1, 2, 1, 2, 3])
    assert plan.sources == (0, 1, 2, 1, 2, 3)
    assert plan.new_positions == (3, 4)
    assert plan_depth(num_layers=4, layer_map=[0, 1, 2, 1, 2, 3]) == plan


def test_factor_one_keeps_the_depth():
    assert plan_depth(num_layers=3, factor=1).sources == (0, 1, 2)


def test_fractional_factor_with_a_whole_result_is_allowed():
    assert plan_depth(num_layers=4, factor=1.5).num_layers == 6


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(layer_map=[0, 4]), r"Source layer out of range \(position 1 -> 4\).*\[0, 3\]"),
        (dict(layer_map=[-1]), r"out of range.*\[0, 3\]"),
        (dict(layer_map=[]), r"empty.*\[0, 3\]"),
        (dict(factor=0.5), r"`factor` must be a number >= 1.*0.5"),
        (dict(factor=0), r"`factor` must be a number >= 1"),
        (dict(factor=1.3), r"not a whole number.*give `num_layers`"),
        (dict(new_num_layers=3), r"`num_layers` must be an integer >= 4"),
        (dict(factor=2, new_num_layers=9), r"gives 8 layers but `num_layers=9`"),
        (dict(method="dus", overlap=2), r"overlap 2 is not allowed for 4 layers.*\[0, 1\]"),
        (dict(method="dus", overlap=-1), r"overlap -1 is not allowed.*\[0, 1\]"),
        (dict(method="dus", factor=3, overlap=1), r"exactly two copies: `factor` must be 2"),
        (dict(method="dus", new_num_layers=7), r"give `overlap`, or an even grown size"),
        (dict(method="identity", positions=[4]), r"positions \[4\] are out of range.*\[0, 3\]"),
        (dict(method="identity", new_num_layers=6, positions=[1]), r"1 identity positions grow 4 layers to 5"),
        (dict(method="identity"), r"needs the grown size"),
        (dict(method="stack"), r"needs the grown size"),
        (dict(method="explicit"), r"needs `layer_map`"),
        (dict(method="grow"), r"Unknown method 'grow'.*stack"),
        (dict(method="stack", factor=2, overlap=1), r"`overlap` belongs to method 'dus'"),
        (dict(layer_map=[0, 1], factor=2), r"do not also give"),
    ],
)
def test_invalid_plans_raise_saying_what_is_allowed(kwargs, message):
    with pytest.raises(ValueError, match=message):
        plan_depth(num_layers=4, **kwargs)


def test_plan_validation_applies_to_json_too():
    text = json.dumps({"source_num_layers": 2, "sources": [0, 2], "inits": ["copy", "copy"], "method": "explicit"})
    with pytest.raises(ValueError, match=r"Source layer out of range"):
        GrowthPlan.from_json(text)
    with pytest.raises(ValueError, match=r"Unknown init rule"):
        GrowthPlan(2, (0, 1), ("copy", "random"))
    with pytest.raises(ValueError, match=r"at least one layer must be a `copy`"):
        GrowthPlan(2, (0, 1), ("zero_residual", "zero_residual"))
