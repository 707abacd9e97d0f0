"""The check every evaluation makes first: the model folder (and its tokenizer) exists and is a saved model."""

from pathlib import Path

from ..errors import InputFileError

# Any of these marks a folder a tokenizer was saved to (`tokenizer.save_pretrained`).
TOKENIZER_FILES = ("tokenizer_config.json", "tokenizer.json", "tokenizer.model")


def check_model_folder(model_dir: Path, tokenizer_dir: Path | None = None) -> None:
    """Fail early, naming the fix, when `model_dir` is not a saved model or no tokenizer is at hand.

    Args:
        model_dir (`Path`): The model folder.
        tokenizer_dir (`Path`, *optional*): A tokenizer folder given apart; by default the model folder's.

    Raises:
        InputFileError: If `model_dir` has no `config.json`, or the tokenizer folder holds no tokenizer.
    """
    model_dir = Path(model_dir)
    if not (model_dir / "config.json").is_file():
        raise InputFileError(
            f"{model_dir} is not a model folder (no config.json). Save one with `model.save_pretrained(dir)` "
            "and `tokenizer.save_pretrained(dir)`, or download it first with `huggingface_hub.snapshot_download`."
        )
    folder = Path(tokenizer_dir) if tokenizer_dir is not None else model_dir
    if not any((folder / name).is_file() for name in TOKENIZER_FILES):
        fix = "give a folder written by `tokenizer.save_pretrained`" if tokenizer_dir else "pass --tokenizer FOLDER"
        raise InputFileError(f"no tokenizer in {folder} (none of {', '.join(TOKENIZER_FILES)}): {fix}.")
