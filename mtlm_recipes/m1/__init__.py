"""The M1 recipe's parts (`examples/m1/train.py` is the trainer): run config, data, crash-safe checkpoints."""
