"""Train MTLM2 as the original did, in JAX/Flax on a device mesh, and export it as an MTLM checkpoint.

    python examples/m2_jax/train.py                                   # CPU-sized default (smoke.yaml)
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python examples/m2_jax/train.py   # 8 simulated devices
    python examples/m2_jax/train.py --config examples/m2_jax/m2.yaml  # the original recipe (TPU v5e-8 sized)

The trainer is `mtlm_recipes.m2_jax.trainer.train` (model, data, mesh, optimizer, checkpoints, export: see its
docstring); the config's sections and keys are in `mtlm_recipes/m2_jax/config.py`, the M1 trainer's wherever the
meaning is the same. Both trainers write `train_losses.jsonl` (`{"step", "loss", "seconds"}` per optimizer step)
and `training.json`, so runs compare and either fills a model card (`hub_cards/build_card.py`).
"""

import argparse
import sys
from pathlib import Path

from mtlm_recipes.errors import report_user_errors
from mtlm_recipes.m2_jax.config import add_run_arguments, run_config_of
from mtlm_recipes.m2_jax.trainer import train

DEFAULT_CONFIG = Path(__file__).with_name("smoke.yaml")


@report_user_errors
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_arguments(parser, DEFAULT_CONFIG)
    parser.add_argument("--num-devices", type=int, help="overrides mesh.num_devices")
    parser.add_argument("--shard-params", choices=("true", "false"), help="overrides mesh.shard_params")
    parser.add_argument("--stop-after", type=int, help="stop (with a checkpoint) after this step; schedule unchanged")
    args = parser.parse_args()
    cfg = run_config_of(args)
    if args.num_devices:
        cfg.mesh.num_devices = args.num_devices
    if args.shard_params:
        cfg.mesh.shard_params = args.shard_params == "true"
    train(cfg, stop_after=args.stop_after, command=" ".join(["python", *sys.argv]))


if __name__ == "__main__":
    main()
