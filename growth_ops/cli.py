"""`mtlm-grow`: grow a checkpoint on disk in depth and width, with memory bounded by its largest tensor.

    mtlm-grow SRC DST --depth 2 --method stack
    mtlm-grow SRC DST --width 2 --intermediate 3 --depth 2 --width-noise 1e-3 --seed 0
    mtlm-grow SRC DST --method identity --positions 3,7,11 --dry-run
    mtlm-grow SRC DST --spec growth.json          # a GrowthSpec written by GrowthSpec.to_json()
    python -m growth_ops.cli SRC DST --layer-map 0,1,2,1,2,3 --max-shard-size 5GB
    mtlm-grow plan --params 7B --tokens 2T [--from-params 1.75B --from-tokens 100B] [--json]

The growth flags build one `GrowthSpec` (`--factor` is an alias of `--depth`). `--dry-run` prints the
plan and what would be written, and writes nothing. DST appears only once the grown checkpoint is
complete; an existing DST is replaced only with `--force`. A mistake is reported as one line on
stderr: exit status 2 for a bad argument or spec, 1 when the checkpoint or the destination refuses.

`mtlm-grow plan` grows nothing: it answers whether growth pays for a training budget, and how
(`growth_ops.planner.plan_growth_budget`), each number with its source.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import NoReturn

from .plan import METHODS
from .spec import GrowthSpec

_PROG = "mtlm-grow"
# argparse destination -> GrowthSpec field.
_SPEC_FLAGS = {
    "depth": "depth",
    "num_layers": "num_layers",
    "method": "depth_method",
    "layer_map": "layer_map",
    "overlap": "overlap",
    "positions": "positions",
    "width": "width",
    "intermediate": "intermediate",
    "width_noise": "width_noise",
    "seed": "seed",
}


class _OneLineParser(argparse.ArgumentParser):
    """Reports a bad argument as one line with the fix, not the usage block (`--help` still shows it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer indices such as 0,1,2,1, got {text!r}"
        ) from None


def _count(text: str) -> float:
    from .planner import parse_count

    try:
        return parse_count(text, "value")
    except ValueError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def build_plan_parser() -> argparse.ArgumentParser:
    """The argument parser of `mtlm-grow plan`.

    Returns:
        `argparse.ArgumentParser`
    """
    parser = _OneLineParser(
        prog=f"{_PROG} plan",
        description="Should a training budget grow a small model, and how? Every answer cites its source "
        "(G_stack's fitted formula inside 400M-7B, mtlm's measured study inside its sizes, else unknown).",
        epilog=f"Example: {_PROG} plan --params 7B --tokens 2T --json",
    )
    parser.add_argument("--params", type=_count, required=True, help="parameters of the model to end with, e.g. 200M")
    parser.add_argument("--tokens", type=_count, required=True, help="tokens to train it on in all, e.g. 3.5B")
    parser.add_argument("--from-params", type=_count, help="parameters of an existing small model (the reuse case)")
    parser.add_argument("--from-tokens", type=_count, help="tokens that small model has been trained on")
    parser.add_argument("--json", action="store_true", help="print the plan as JSON")
    return parser


def plan_main(argv: list[str]) -> int:
    """Run `mtlm-grow plan`: print the planner's answer (a table, or JSON with `--json`); exit status 0.

    Args:
        argv (`list[str]`): Arguments after `plan`.

    Returns:
        `int`: 0; a bad argument exits with status 2 (`SystemExit`).
    """
    import json

    from .planner import plan_growth_budget

    parser = build_plan_parser()
    args = parser.parse_args(argv)
    try:
        plan = plan_growth_budget(args.params, args.tokens, args.from_params, args.from_tokens)
    except ValueError as error:
        parser.error(str(error))
    print(json.dumps(plan.to_dict(), indent=2) if args.json else plan)
    return 0


def _size(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mtlm-grow`.

    Returns:
        `argparse.ArgumentParser`
    """
    parser = _OneLineParser(
        prog=_PROG,
        description="Grow a Transformers safetensors checkpoint on disk in depth and width (growth_ops.grow_checkpoint).",
        epilog=f"Example: {_PROG} ./tinyllama ./tinyllama-x2 --depth 2 --method stack. "
        f"`{_PROG} plan --help`: should a training budget grow, and how.",
    )
    parser.add_argument("src", help="checkpoint folder written by save_pretrained (config.json + safetensors)")
    parser.add_argument("dst", help="folder to create for the grown checkpoint")
    growth = parser.add_argument_group("growth (one GrowthSpec: these flags, or --spec)")
    growth.add_argument("--spec", type=Path, help="a GrowthSpec as JSON (GrowthSpec.to_json()), instead of the flags")
    growth.add_argument(
        "--depth", "--factor", dest="depth", type=float, help="depth factor; factor x layers must be a whole number"
    )
    growth.add_argument("--num-layers", type=int, help="number of layers after growth (instead of --depth)")
    growth.add_argument(
        "--method",
        "--depth-method",
        dest="method",
        choices=METHODS,
        help="how layers are copied (default: stack, or explicit with --layer-map)",
    )
    growth.add_argument(
        "--layer-map", type=_int_list, help="explicit: source layer of every new layer, e.g. 0,1,2,1,2"
    )
    growth.add_argument("--overlap", type=int, help="dus: layers dropped from each of the two copies")
    growth.add_argument("--positions", type=_int_list, help="identity: the source layer each inserted copy follows")
    growth.add_argument("--width", type=int, help="width factor: hidden size, attention and KV heads x N (exact)")
    growth.add_argument(
        "--intermediate", type=int, help="factor of the MLP and experts' intermediate sizes (default: --width)"
    )
    growth.add_argument(
        "--width-noise", type=float, help="symmetry breaking: noise that cancels across copies (e.g. 1e-3)"
    )
    growth.add_argument("--seed", type=int, help="seed of --width-noise (default 0)")
    parser.add_argument(
        "--max-shard-size", type=_size, help="largest output file, e.g. 500MB (default: grow_checkpoint's, 2GB)"
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model code shipped in SRC")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and what would be written; write nothing"
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists (once the new one is complete)")
    return parser


def spec_from_args(parser: argparse.ArgumentParser, args: argparse.Namespace) -> GrowthSpec:
    """The one `GrowthSpec` the flags (or `--spec FILE`) describe; a mistake exits through `parser.error`.

    Args:
        parser (`argparse.ArgumentParser`): From `build_parser`.
        args (`argparse.Namespace`): The parsed arguments.

    Returns:
        `GrowthSpec`
    """
    flags = {field: getattr(args, dest) for dest, field in _SPEC_FLAGS.items() if getattr(args, dest) is not None}
    try:
        if args.spec is None:
            return GrowthSpec(**flags)
        if flags:
            parser.error(f"--spec {args.spec} describes the whole growth: drop {', '.join(sorted(flags))}")
        if not args.spec.is_file():
            parser.error(f"--spec {args.spec} is not a file: give the JSON written by GrowthSpec.to_json()")
        return GrowthSpec.from_json(args.spec.read_text())
    except ValueError as error:
        parser.error(str(error))


def main(argv: list[str] | None = None) -> int:
    """Run `mtlm-grow`.

    Args:
        argv (`list[str]`, *optional*): Arguments without the program name; defaults to `sys.argv[1:]`.

    Returns:
        `int`: The exit status: 0 on success, 1 when the checkpoint, the destination or the plan is
        refused. A bad argument or spec exits with status 2 (`SystemExit`), as argparse does.
    """
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["plan"]:
        return plan_main(argv[1:])
    parser = build_parser()
    args = parser.parse_args(argv)
    spec = spec_from_args(parser, args)
    # Imported after the arguments are read: `--help` and argument mistakes need no torch.
    from .checkpoint import grow_checkpoint, plan_checkpoint_growth

    options = {"trust_remote_code": args.trust_remote_code}
    if args.max_shard_size is not None:
        options["max_shard_size"] = args.max_shard_size
    start = time.perf_counter()
    try:
        if args.dry_run:
            print(plan_checkpoint_growth(args.src, spec, **options))
            print(f"dry run: nothing written (a real run writes {args.dst}).")
            if Path(args.dst).exists() and not args.force:
                print(f"note: {args.dst} already exists: a real run needs --force to replace it.")
            return 0
        growth = grow_checkpoint(args.src, args.dst, spec, overwrite=args.force, progress=True, **options)
    except (OSError, ValueError) as error:
        print(f"{_PROG}: error: {error}", file=sys.stderr)
        return 1
    print(growth)
    print(f"wrote {args.dst} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
