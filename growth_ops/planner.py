"""Should I grow, and how? A planner for a training budget that cites a source for every number it gives.

Two sources, each only inside the range it was measured on (../shared/GROWTH_STUDY.md):

- G_stack ("Stacking Your Transformers", NeurIPS 2024): its fitted timing formula for the tokens to train the
  small model before stacking it x4, `log10(d) = 0.88 log10(N) + 163.27 / log10(C) - 5.74`, fitted on
  Llama-style models from about 400M to 7B parameters, and its published savings (1.1B, 7B);
- our own study across sizes (`benchmarks/growth_scale.py`), shipped as `_data/growth_study_points.json`.

Outside both the answer is "unknown" (the formula's value is still shown, labelled as an extrapolation),
never a silent extrapolation. No torch: `mtlm-grow plan` answers at once.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, field
from importlib import resources
from typing import Any

GSTACK = "G_stack (Du et al., NeurIPS 2024)"
GSTACK_FITTED_PARAMETERS = (4e8, 7e9)  # the Llama-style sizes G_stack's timing formula was fitted on
GSTACK_FACTOR = 4  # its best growth factor (depth x4)
# Its published savings in the total-budget view: 1.1B (49% speed-up, so 1 - 1/1.49 fewer FLOPs) and 7B (the
# scratch model's 300B-token loss reached at 194B tokens).
GSTACK_SAVINGS = {1.1e9: 1 - 1 / 1.49, 7e9: 1 - 194 / 300}
# How far outside our measured sizes and budgets (in decades) an answer from them may lie.
MEASURED_TOLERANCE_DECADES = 0.15
_SUFFIXES = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}
_COUNT = re.compile(r"^\s*([+-]?[0-9]*\.?[0-9]+(?:[eE][+-]?[0-9]+)?)\s*([KMBGT]?)\s*$", re.IGNORECASE)


def parse_count(text: str | float, name: str = "count") -> float:
    """`"200M"` -> 2e8, `"3.5B"` -> 3.5e9, `"2T"`, `"7e9"`, `7e9`; `name` is the flag the message names.

    Raises:
        ValueError: If `text` is not a positive count.
    """
    if isinstance(text, (int, float)) and not isinstance(text, bool):
        value = float(text)
    else:
        match = _COUNT.match(str(text))
        if match is None:
            raise ValueError(
                f"{name} {text!r} is not a count: write a positive number with an optional K, M, B or T "
                "suffix, such as 200M, 3.5B, 2T or 7e9."
            )
        value = float(match.group(1)) * _SUFFIXES[match.group(2).upper()]
    if not value > 0 or math.isinf(value):
        raise ValueError(f"{name} must be a positive count such as 200M, got {text!r}.")
    return value


def gstack_small_model_tokens(parameters: float, compute: float) -> float:
    """G_stack's fitted tokens to train the small model before stacking x4: 10 ** (0.88 log10 N + 163.27 / log10 C
    - 5.74), for a target of `parameters` (N) trained with `compute` FLOPs (C = 6 N D)."""
    return 10 ** (0.88 * math.log10(parameters) + 163.27 / math.log10(compute) - 5.74)


@dataclass(frozen=True)
class Answer:
    """One number (or yes / no / unknown) of the plan and where it comes from."""

    value: Any
    source: str


@dataclass(frozen=True)
class GrowthBudgetPlan:
    """The planner's answer: grow or not, from which size, after how many tokens, by which factor, the saving."""

    parameters: float
    tokens: float
    compute: float
    from_parameters: float | None
    from_tokens: float | None
    grow: Answer
    from_size: Answer
    at_tokens: Answer
    factor: Answer
    expected_saving: Answer
    notes: tuple[str, ...] = field(default=())

    def to_dict(self) -> dict:
        return asdict(self)

    def __str__(self) -> str:
        def show(value: Any) -> str:
            if isinstance(value, float):
                return f"{value:.3g}"
            if isinstance(value, dict):
                return ", ".join(f"{key} {show(item)}" for key, item in value.items())
            return str(value)

        head = f"target {self.parameters:.3g} parameters, {self.tokens:.3g} tokens ({self.compute:.3g} FLOPs)"
        if self.from_parameters is not None:
            trained = f", trained on {self.from_tokens:.3g} tokens" if self.from_tokens is not None else ""
            head += f"; an existing {self.from_parameters:.3g}-parameter model{trained}"
        rows = [
            (label, getattr(self, name))
            for label, name in (
                ("grow", "grow"),
                ("from size", "from_size"),
                ("at tokens", "at_tokens"),
                ("factor", "factor"),
                ("expected saving", "expected_saving"),
            )
        ]
        lines = [head] + [f"  {label:>15}: {show(answer.value)}  [{answer.source}]" for label, answer in rows]
        return "\n".join(lines + [f"  note: {note}" for note in self.notes])


def load_measured_points() -> dict:
    """Our study's measured points, with their provenance (`_data/growth_study_points.json`)."""
    return json.loads(resources.files("growth_ops").joinpath("_data/growth_study_points.json").read_text())


def _decades(a: float, b: float) -> float:
    return abs(math.log10(a) - math.log10(b))


def _nearest_measured(points: list[dict], parameters: float, tokens_per_parameter: float) -> list[dict]:
    """The measured points of the size and budget nearest the target, if both lie inside what we measured."""
    sizes = [p["target_parameters"] for p in points]
    budgets = [p["tokens_per_parameter"] for p in points]
    tolerance = 10**MEASURED_TOLERANCE_DECADES
    if not min(sizes) / tolerance <= parameters <= max(sizes) * tolerance:
        return []
    if not min(budgets) / tolerance <= tokens_per_parameter <= max(budgets) * tolerance:
        return []
    size = min(sizes, key=lambda s: _decades(s, parameters))
    at_size = [p for p in points if p["target_parameters"] == size]
    budget = min((p["tokens_per_parameter"] for p in at_size), key=lambda b: _decades(b, tokens_per_parameter))
    return [p for p in at_size if p["tokens_per_parameter"] == budget]


def _from_gstack(parameters: float, tokens: float, compute: float, from_parameters, from_tokens) -> dict:
    d = gstack_small_model_tokens(parameters, compute)
    formula = f"{GSTACK} fitted timing formula, inside its fitted range (400M-7B)"
    saving = {f"{size:.2g} parameters": round(value, 3) for size, value in GSTACK_SAVINGS.items()}
    answers = {
        "at_tokens": Answer(d, formula),
        "expected_saving": Answer(saving, f"{GSTACK} published (total-budget view, small model's FLOPs counted)"),
    }
    notes = []
    if from_parameters is None:
        answers["grow"] = Answer(
            "yes" if d < tokens else "no",
            f"{GSTACK}: stacking saved FLOPs at 1.1B and 7B"
            + ("" if d < tokens else "; but the formula's small-model tokens exceed your whole budget"),
        )
        answers["from_size"] = Answer(parameters / GSTACK_FACTOR, f"{GSTACK}: the target's layers / {GSTACK_FACTOR}")
        answers["factor"] = Answer(GSTACK_FACTOR, f"{GSTACK}: the best factor it found")
        return {"answers": answers, "notes": notes}
    factor = parameters / from_parameters
    answers["from_size"] = Answer(from_parameters, "given (--from-params)")
    answers["factor"] = Answer(factor, "given: --params / --from-params")
    answers["grow"] = Answer(
        "yes",
        f"{GSTACK}: growth beat scratch with the small model's FLOPs counted; with them sunk (your case) it "
        "beats scratch at equal added FLOPs by at least as much. Against keep training the small model: not measured",
    )
    answers["expected_saving"] = Answer(
        "unknown", f"{GSTACK} measured the total-budget view only; the reuse view is not in its results"
    )
    if abs(factor - GSTACK_FACTOR) > 0.5:
        notes.append(f"G_stack fitted its timing at a factor of {GSTACK_FACTOR}; yours is {factor:.2g}.")
    if from_tokens is not None and from_tokens > d:
        notes.append(
            f"your small model has seen {from_tokens:.3g} tokens, more than the {d:.3g} G_stack's formula gives: "
            "grow now; the benefit shrinks as the small model trains longer (Liew and Kato, 2025)."
        )
    return {"answers": answers, "notes": notes}


def _from_measured(nearest: list[dict], parameters: float, tokens: float, reuse: bool) -> dict:
    data = load_measured_points()
    where = (
        f"mtlm growth study ({data['source']}, {data['date']}), nearest measured point: "
        f"{nearest[0]['target_parameters']:,} parameters at {nearest[0]['tokens_per_parameter']:.3g} tokens/parameter"
    )
    saved = [p for p in nearest if p["saving_min"] is not None and p["saving_min"] > 0 and p["seeds_saving_flops"]]
    measured = all(p["big_from_scratch_beats_control"] for p in nearest)
    answers = {}
    if reuse:
        won = {p["method"]: p["reuse_seeds_won_by"] for p in nearest}
        grown_everywhere = [m for m, w in won.items() if w.get("grown", 0) == sum(w.values())]
        answers["grow"] = Answer(
            "yes" if grown_everywhere else "no",
            f"{where}; reuse view, seeds won at equal added FLOPs (grown, keep training the small model, "
            f"big from scratch, read off its curve where it is not annealed: this favours growth): {won}",
        )
        answers["expected_saving"] = Answer("unknown", f"{where}: the reuse view compares losses, not FLOPs")
        answers["at_tokens"] = Answer("now", "the reuse case: the small model exists and is grown as it is")
        return {"answers": answers, "notes": []}
    if not measured or not saved:
        why = (
            "the big model from scratch does not beat the small model alone here: train the small one"
            if not measured
            else "no grown arm saved FLOPs on every seed"
        )
        answers["grow"] = Answer("no", f"{where}: {why}")
        for name in ("from_size", "at_tokens", "factor"):
            answers[name] = Answer(None, f"not applicable: {where}: {why}")
        answers["expected_saving"] = Answer(None, f"not applicable: {where}: {why}")
    else:
        best = max(saved, key=lambda p: p["saving_mean"])
        answers["grow"] = Answer("yes", f"{where}: {best['method']} saved FLOPs on every seed")
        answers["expected_saving"] = Answer(best["saving_mean"], f"{where}: mean over seeds")
        answers["from_size"] = Answer(
            parameters * best["from_parameters"] / best["target_parameters"] if best["from_parameters"] else None,
            f"{where}: the small model of {best['method']}",
        )
        answers["at_tokens"] = Answer(
            best["from_tokens_per_target_token"] * tokens,
            f"{where}: the small model's tokens when grown at {best['grow_at_fraction_of_budget']:.0%} of the FLOP "
            "budget, scaled to your tokens",
        )
        answers["factor"] = Answer(2, f"{where}: {best['method']} x2")
    return {"answers": answers, "notes": []}


def plan_growth_budget(
    params: float | str,
    tokens: float | str,
    from_params: float | str | None = None,
    from_tokens: float | str | None = None,
) -> GrowthBudgetPlan:
    """Answer whether to grow into a model of `params` parameters trained on `tokens` tokens, and how.

    Inside G_stack's fitted range (400M-7B) the answer is G_stack's; inside the sizes and budgets of our
    study it is our measurement's (the nearest measured point); elsewhere "unknown", with G_stack's formula
    shown as a labelled extrapolation. With `from_params` (a trained small model exists: the reuse case)
    the small model's FLOPs are sunk and the factor is given.

    Args:
        params (`float` or `str`): Parameters of the model to end with (`"200M"`, `7e9`).
        tokens (`float` or `str`): Tokens it is to be trained on in all (`"3.5B"`).
        from_params (`float` or `str`, *optional*): Parameters of an existing small model to grow from.
        from_tokens (`float` or `str`, *optional*): Tokens that small model has been trained on.

    Returns:
        `GrowthBudgetPlan`: every answer with its source; `str()` shows it as a table, `to_dict()` as JSON.

    Raises:
        ValueError: If a count is not a positive number, `from_params` is not smaller than `params`, or
            `from_tokens` is given without `from_params`.
    """
    parameters, total_tokens = parse_count(params, "--params"), parse_count(tokens, "--tokens")
    small = None if from_params is None else parse_count(from_params, "--from-params")
    small_tokens = None if from_tokens is None else parse_count(from_tokens, "--from-tokens")
    if small is not None and small >= parameters:
        raise ValueError(
            f"--from-params ({small:.3g}) must be smaller than --params ({parameters:.3g}): growth makes a model bigger."
        )
    if small_tokens is not None and small is None:
        raise ValueError("--from-tokens describes an existing small model: give its size with --from-params too.")
    compute = 6 * parameters * total_tokens
    unknown = "unknown: outside G_stack's fitted range (400M-7B parameters) and outside our measured sizes"
    answers = {name: Answer("unknown", unknown) for name in ("grow", "from_size", "at_tokens", "factor")}
    answers["expected_saving"] = Answer("unknown", unknown)
    notes = []
    low, high = GSTACK_FITTED_PARAMETERS
    nearest = _nearest_measured(load_measured_points()["points"], parameters, total_tokens / parameters)
    if low <= parameters <= high:
        found = _from_gstack(parameters, total_tokens, compute, small, small_tokens)
    elif nearest:
        found = _from_measured(nearest, parameters, total_tokens, reuse=small is not None)
    else:
        found = {"answers": {}, "notes": []}
        d = gstack_small_model_tokens(parameters, compute)
        notes.append(
            f"G_stack's formula would give {d:.3g} tokens before stacking, but only as an extrapolation outside "
            "its fitted range: not an answer."
        )
    answers.update(found["answers"])
    if small is not None:
        answers.setdefault("from_size", Answer(small, "given (--from-params)"))
        if answers["factor"].value == "unknown":
            answers["factor"] = Answer(parameters / small, "given: --params / --from-params")
        if answers["from_size"].value == "unknown":
            answers["from_size"] = Answer(small, "given (--from-params)")
    return GrowthBudgetPlan(
        parameters,
        total_tokens,
        compute,
        small,
        small_tokens,
        notes=tuple(found["notes"] + notes),
        **answers,
    )
