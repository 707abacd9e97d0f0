"""`mtlm-grow`: grow the depth of a checkpoint on disk, with memory bounded by its largest tensor.

    mtlm-grow SRC DST --factor 2 --method stack
    mtlm-grow SRC DST --method identity --positions 3,7,11 --dry-run
    python -m growth_ops.cli SRC DST --layer-map 0,1,2,1,2,3 --max-shard-size 5GB

`--dry-run` prints the plan and what would be written, and writes nothing. DST appears only once the
grown checkpoint is complete; an existing DST is replaced only with `--force`.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .checkpoint import DEFAULT_MAX_SHARD_SIZE, grow_checkpoint, plan_checkpoint_growth
from .plan import METHODS


def _int_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.replace(" ", "").split(",") if part]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer indices such as 0,1,2,1, got {text!r}"
        ) from None


def _size(text: str) -> int | str:
    return int(text) if text.isdigit() else text


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `mtlm-grow`.

    Returns:
        `argparse.ArgumentParser`
    """
    parser = argparse.ArgumentParser(
        prog="mtlm-grow",
        description="Grow the depth of a Transformers safetensors checkpoint on disk (growth_ops.grow_checkpoint).",
        epilog="Example: mtlm-grow ./tinyllama ./tinyllama-x2 --factor 2 --method stack",
    )
    parser.add_argument("src", help="checkpoint folder written by save_pretrained (config.json + safetensors)")
    parser.add_argument("dst", help="folder to create for the grown checkpoint")
    parser.add_argument("--factor", type=float, help="growth factor; factor x layers must be a whole number")
    parser.add_argument("--num-layers", type=int, help="number of layers after growth (instead of --factor)")
    parser.add_argument(
        "--method", choices=METHODS, help="how layers are copied (default: stack, or explicit with --layer-map)"
    )
    parser.add_argument(
        "--layer-map", type=_int_list, help="explicit: source layer of every new layer, e.g. 0,1,2,1,2"
    )
    parser.add_argument("--overlap", type=int, help="dus: layers dropped from each of the two copies")
    parser.add_argument("--positions", type=_int_list, help="identity: the source layer each inserted copy follows")
    parser.add_argument(
        "--max-shard-size",
        type=_size,
        default=DEFAULT_MAX_SHARD_SIZE,
        help="largest output file (default: %(default)s)",
    )
    parser.add_argument("--trust-remote-code", action="store_true", help="run the model code shipped in SRC")
    parser.add_argument(
        "--dry-run", action="store_true", help="print the plan and what would be written; write nothing"
    )
    parser.add_argument("--force", action="store_true", help="replace DST if it exists (once the new one is complete)")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run `mtlm-grow`.

    Args:
        argv (`list[str]`, *optional*): Arguments without the program name; defaults to `sys.argv[1:]`.

    Returns:
        `int`: The exit status: 0 on success, 1 when the input or the plan is refused, 2 for bad arguments.
    """
    args = build_parser().parse_args(argv)
    plan_args = dict(
        factor=args.factor,
        num_layers=args.num_layers,
        method=args.method,
        layer_map=args.layer_map,
        overlap=args.overlap,
        positions=args.positions,
        max_shard_size=args.max_shard_size,
        trust_remote_code=args.trust_remote_code,
    )
    start = time.perf_counter()
    try:
        if args.dry_run:
            print(plan_checkpoint_growth(args.src, **plan_args))
            print(f"dry run: nothing written (a real run writes {args.dst}).")
            if Path(args.dst).exists() and not args.force:
                print(f"note: {args.dst} already exists: a real run needs --force to replace it.")
            return 0
        growth = grow_checkpoint(args.src, args.dst, overwrite=args.force, progress=True, **plan_args)
    except (OSError, ValueError) as error:
        print(f"mtlm-grow: error: {error}", file=sys.stderr)
        return 1
    print(growth)
    print(f"wrote {args.dst} in {time.perf_counter() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
