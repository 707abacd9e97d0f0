"""The device mesh of the M2 trainer: batches split over every device, parameters optionally too (FSDP-like).

As the original on a TPU v5e-8: one mesh axis, `"data"`; the batch is sharded on it, and with `shard_params`
every parameter and optimizer moment whose first axis divides by the device count is sharded on that axis.
`jax.jit` then inserts the collectives (GSPMD); nothing here is hand-written communication.
"""

import jax
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

from ..errors import ConfigError

DATA_AXIS = "data"


def make_mesh(num_devices: int | None = None) -> Mesh:
    """A one-axis mesh over the first `num_devices` devices (all by default)."""
    devices = jax.devices()
    count = num_devices or len(devices)
    if count > len(devices):
        raise ConfigError(
            f"Asked for a mesh of {count} devices, but JAX sees {len(devices)} ({devices[0].platform}). On CPU, "
            f"set XLA_FLAGS=--xla_force_host_platform_device_count={count} before jax is imported."
        )
    return jax.make_mesh((count,), (DATA_AXIS,), axis_types=(AxisType.Auto,), devices=devices[:count])


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """(batch, seq) arrays split on the batch axis."""
    return NamedSharding(mesh, PartitionSpec(DATA_AXIS, None))


def state_shardings(state, mesh: Mesh, shard_params: bool):
    """Shardings for a tree of arrays (or `jax.ShapeDtypeStruct`): first axis on the mesh where it divides, else
    replicated; everything replicated when `shard_params` is off."""

    def sharding(leaf) -> NamedSharding:
        if shard_params and leaf.ndim >= 1 and leaf.shape[0] % mesh.size == 0:
            return NamedSharding(mesh, PartitionSpec(DATA_AXIS))
        return NamedSharding(mesh, PartitionSpec())

    return jax.tree.map(sharding, state)
