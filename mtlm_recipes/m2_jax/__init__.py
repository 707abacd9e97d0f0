"""The M2 recipe in JAX/Flax (`examples/m2_jax/train.py` is its command line): the Flax MTLM, its data, mesh,
jitted steps, orbax checkpoints, and the trainer. The only part of `mtlm_recipes` that imports JAX."""
