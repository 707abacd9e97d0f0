"""The architecture record both trainers write into every checkpoint, and the check made before resuming from one.

A checkpoint holds the train state of one model shape; resuming it into another would fail deep inside the
state loading, or not fail at all where shapes happen to agree. Each trainer writes `architecture_of(config)`
beside its state (the M1 trainer in `trainer_state.json`, the M2 trainer as an orbax JSON item) and calls
`check_architecture` before it reads a single array.
"""

from .errors import ConfigError

# The config fields that fix the shapes of the train state.
ARCHITECTURE_FIELDS = (
    "model_type",
    "vocab_size",
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "head_dim",
    "mlp_type",
    "position_embedding_type",
    "max_position_embeddings",
    "tie_word_embeddings",
    "attention_bias",
    "mlp_bias",
)


def architecture_of(config) -> dict:
    """The `ARCHITECTURE_FIELDS` of a model config, as plain JSON values."""
    return {field: getattr(config, field, None) for field in ARCHITECTURE_FIELDS}


def check_architecture(saved: dict | None, config, checkpoint: str) -> None:
    """Refuse to resume the checkpoint `checkpoint`, whose record is `saved`, into a model built from `config`.

    Fields missing from `saved` are not compared (a checkpoint written before they were recorded).

    Raises:
        ConfigError: If the checkpoint has no record, or a recorded field differs (each named, both values given).
    """
    if not saved:
        raise ConfigError(
            f"The checkpoint {checkpoint} records no architecture, so it cannot be checked against this run: "
            "start a new output directory."
        )
    expected = architecture_of(config)
    differing = [field for field in ARCHITECTURE_FIELDS if field in saved and saved[field] != expected[field]]
    if differing:
        details = ", ".join(f"{field}: saved {saved[field]!r}, now {expected[field]!r}" for field in differing)
        raise ConfigError(
            f"The checkpoint {checkpoint} belongs to another model ({details}), another architecture than this "
            "run's. Resume it with the config it was written with, or start a new output directory."
        )
