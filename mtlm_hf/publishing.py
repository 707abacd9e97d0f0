# Copyright 2026 The mtlm authors. Licensed under the MIT License.
"""Publish a saved MTLM folder to the Hugging Face Hub in one commit.

    python -m mtlm_hf.publishing FOLDER user/MTLM1-200M [--private] [--max-shard-size 5GB]
    mtlm-publish FOLDER user/MTLM1-200M          # the same, as an installed command

A publishable folder is what `model.save_pretrained(folder)` and `tokenizer.save_pretrained(folder)` write, plus a
model card (`README.md`, see `hub_cards/`): safetensors weights, `config.json` with `auto_map`, the code files
`auto_map` names (so the repo loads with `trust_remote_code=True` where this package is absent), the tokenizer and
`generation_config.json`. The folder is checked before anything is sent, and never written to: weights larger
than `max_shard_size` are resharded into a temporary folder. Everything goes up in a single commit through
`HfApi.create_commit`, so a reader never sees half a model (`upload_folder` may split a large folder into
several commits when `hf_xet` is installed).
"""

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

from huggingface_hub import CommitInfo, CommitOperationAdd, HfApi, constants, get_token
from huggingface_hub.errors import HfHubHTTPError, HFValidationError, RepositoryNotFoundError
from huggingface_hub.utils import validate_repo_id

try:  # the HTTP client huggingface_hub uses: httpx2 from huggingface_hub 2, httpx before
    from httpx2 import TransportError
except ImportError:
    from httpx import TransportError

from mtlm_shards import reshard

DEFAULT_MAX_SHARD_SIZE = "5GB"
DEFAULT_COMMIT_MESSAGE = "Upload MTLM model (weights, config, code, tokenizer, card)"
_PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
_TOKENIZER_FILES = ("tokenizer.json", "tokenizer.model")
_SIZE_UNITS = {"": 1, "KB": 10**3, "MB": 10**6, "GB": 10**9, "TB": 10**12}
USAGE_ERROR_STATUS = 2  # argparse's status for a bad command line; a PublishError is the user's to fix too


class PublishError(RuntimeError):
    """Publishing failed; the message says what failed and what to do. The local folder is unchanged."""


def _size_in_bytes(size: int | str) -> int:
    """`"5GB"` -> 5_000_000_000 (decimal units, as Transformers and huggingface_hub read them).

    Written here because huggingface_hub's parser of these strings is private.
    """
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?B)?\s*", size.upper())
    if not match:
        raise PublishError(f"max_shard_size {size!r} is not a size: write it like 5GB, 500MB or a number of bytes.")
    return int(float(match.group(1)) * _SIZE_UNITS[match.group(2) or ""])


def collect_files(folder: Path) -> list[Path]:
    """Check that `folder` holds a complete MTLM model and return the files to upload (top level, not hidden).

    Args:
        folder (`Path`): the folder to publish.

    Returns:
        `list[Path]`: every regular, non-hidden file at the top of the folder.

    Raises:
        PublishError: naming what is missing or not allowed, and how to fix it.
    """
    if not folder.is_dir():
        raise PublishError(f"{folder} is not a folder: pass the folder `model.save_pretrained(...)` wrote.")
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    names = {p.name for p in files}
    pickles = sorted(name for name in names if name.endswith(_PICKLE_SUFFIXES))
    if pickles:
        raise PublishError(
            f"{folder} holds pickle files {pickles}: MTLM publishes safetensors only. Move them out of the folder "
            "(re-save the model with `save_pretrained`, which writes safetensors)."
        )
    if "config.json" not in names:
        raise PublishError(f"{folder} has no config.json: save the model with `model.save_pretrained(folder)`.")
    config = json.loads((folder / "config.json").read_text())
    auto_map = config.get("auto_map")
    if not auto_map:
        raise PublishError(
            f"{folder}/config.json has no auto_map, so the repo would not load with trust_remote_code. Save the "
            "model after `import mtlm_hf` (it registers the classes for auto_map) with `model.save_pretrained`."
        )
    code_files = {reference.split(".")[0] + ".py" for reference in auto_map.values()}
    missing = {
        "weights (*.safetensors)": not any(name.endswith(".safetensors") for name in names),
        "generation_config.json": "generation_config.json" not in names,
        "tokenizer (tokenizer.json or tokenizer.model)": not names.intersection(_TOKENIZER_FILES),
        "tokenizer_config.json": "tokenizer_config.json" not in names,
        "model card (README.md)": "README.md" not in names,
        **{f"code file {code}": code not in names for code in sorted(code_files)},
    }
    missing = [what for what, absent in missing.items() if absent]
    if missing:
        raise PublishError(
            f"{folder} is missing {', '.join(missing)}. Write the model with `model.save_pretrained(folder)`, the "
            "tokenizer with `tokenizer.save_pretrained(folder)` and the card with `hub_cards/build_card.py`."
        )
    return files


def _reshard_if_needed(files: list[Path], max_shard_size: int | str, staging: Path) -> list[Path]:
    """Return `files` with the weights replaced by shards of at most `max_shard_size` when a file is larger.

    The shards are streamed one tensor at a time, so publishing a model does not need it in memory.
    """
    limit = _size_in_bytes(max_shard_size)
    weights = [p for p in files if p.name.endswith(".safetensors") or p.name == "model.safetensors.index.json"]
    if all(p.stat().st_size <= limit for p in weights):
        return files
    try:
        shards = reshard(weights[0].parent, staging, max_shard_size)
    except (FileNotFoundError, ValueError) as error:
        raise PublishError(f"Resharding the weights failed: {error}") from None
    return [p for p in files if p not in weights] + shards


def _explain(error: Exception, endpoint: str, repo_id: str, step: str) -> PublishError:
    """Turn a Hub client error into a message that says what failed and what to do."""
    if isinstance(error, TransportError):
        return PublishError(
            f"Could not reach the Hub at {endpoint} while {step} ({type(error).__name__}: {error}). Check the network "
            "and the endpoint (the `endpoint` argument, --endpoint or HF_ENDPOINT), then run the same command again."
        )
    status = error.response.status_code if error.response is not None else None
    detail = error.server_message or str(error).splitlines()[0]
    if status in (401, 403):
        return PublishError(
            f"The Hub at {endpoint} refused the token while {step} for {repo_id} (HTTP {status}: {detail}). Pass a "
            "token with write access to that namespace: `token=` / --token, the HF_TOKEN variable, or `hf auth login`."
        )
    return PublishError(f"The Hub at {endpoint} answered HTTP {status} while {step} for {repo_id}: {detail}")


def check_can_publish(repo_id: str, token: str | None = None, endpoint: str | None = None) -> None:
    """Find out in a second, before a long run, whether publishing to `repo_id` could succeed.

    The checks `publish` makes before it sends anything (repo id, offline mode, a token), then one read of
    the repo on the Hub, so that a missing network or a refused token is found before training, not after.
    A repo that does not exist yet passes: `publish` creates it.

    Raises:
        PublishError: Naming what is missing (a valid repo id, network, a token, write access) and how to fix it.
    """
    _check_locally(repo_id, token)
    api = HfApi(endpoint=endpoint, token=token)
    try:
        api.repo_info(repo_id)
    except RepositoryNotFoundError:
        pass  # the Hub answered; publishing creates the repo
    except (HfHubHTTPError, TransportError) as error:
        raise _explain(error, api.endpoint, repo_id, "reading the repo") from None


def _check_locally(repo_id: str, token: str | None) -> None:
    """The checks that need no network: a valid repo id, online mode, a token."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError:
        raise PublishError(
            f"{repo_id!r} is not a Hub repo id: write it as namespace/name of letters, digits, '-', '_' and '.', "
            "such as user/MTLM1-200M."
        ) from None
    if constants.is_offline_mode():
        raise PublishError(
            "huggingface_hub is in offline mode (HF_HUB_OFFLINE or TRANSFORMERS_OFFLINE is set): unset it to publish."
        )
    if token is None and get_token() is None:
        raise PublishError(
            "No Hugging Face token: pass one with write access as `token=` / --token, set HF_TOKEN, "
            "or run `hf auth login`."
        )


def publish(
    folder: str | Path,
    repo_id: str,
    token: str | None = None,
    endpoint: str | None = None,
    private: bool = False,
    commit_message: str = DEFAULT_COMMIT_MESSAGE,
    max_shard_size: int | str = DEFAULT_MAX_SHARD_SIZE,
) -> CommitInfo:
    """Upload a saved MTLM folder (weights, config, code, tokenizer, generation config, card) in one Hub commit.

    Args:
        folder (`str` or `Path`): what `save_pretrained` wrote, with the tokenizer and `README.md`.
        repo_id (`str`): `"namespace/name"`; created if it does not exist.
        token (`str`, *optional*): a write token; defaults to huggingface_hub's (HF_TOKEN, `hf auth login`).
        endpoint (`str`, *optional*): the Hub URL; defaults to HF_ENDPOINT or https://huggingface.co.
        private (`bool`, *optional*, defaults to `False`): create the repo private.
        commit_message (`str`, *optional*): the commit's summary.
        max_shard_size (`int` or `str`, *optional*, defaults to `"5GB"`): weights files larger than this are
            resharded (in a temporary folder) into shards of at most this size, with an index.

    Returns:
        `CommitInfo`: the commit created (`oid`, `commit_url`).

    Raises:
        PublishError: the repo id is malformed, the folder is incomplete, offline mode is on, there is no token
            or it is refused, or the Hub cannot be reached. Nothing in `folder` is modified in any case.
    """
    _check_locally(repo_id, token)
    files = collect_files(Path(folder))
    api = HfApi(endpoint=endpoint, token=token)
    with tempfile.TemporaryDirectory(prefix="mtlm-publish-") as staging:
        upload = _reshard_if_needed(files, max_shard_size, Path(staging))
        operations = [CommitOperationAdd(path_in_repo=path.name, path_or_fileobj=str(path)) for path in upload]
        step = "creating the repo"
        try:
            api.create_repo(repo_id, private=private, exist_ok=True)
            step = "committing the files"
            return api.create_commit(repo_id, operations, commit_message=commit_message)
        except (HfHubHTTPError, TransportError) as error:
            raise _explain(error, api.endpoint, repo_id, step) from error


def main(argv: list[str] | None = None) -> int:
    """The `mtlm-publish` command; returns the exit status: 0, or 2 with one line on stderr for a `PublishError`."""
    parser = argparse.ArgumentParser(
        prog="mtlm-publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("folder", type=Path)
    parser.add_argument("repo_id")
    parser.add_argument("--token", help="write token (default: HF_TOKEN or the stored login)")
    parser.add_argument("--endpoint", help="Hub URL (default: HF_ENDPOINT or https://huggingface.co)")
    parser.add_argument("--private", action="store_true")
    parser.add_argument("--commit-message", default=DEFAULT_COMMIT_MESSAGE)
    parser.add_argument("--max-shard-size", default=DEFAULT_MAX_SHARD_SIZE)
    args = parser.parse_args(argv)
    try:
        commit = publish(
            args.folder,
            args.repo_id,
            token=args.token,
            endpoint=args.endpoint,
            private=args.private,
            commit_message=args.commit_message,
            max_shard_size=args.max_shard_size,
        )
    except PublishError as error:
        print(f"mtlm-publish: error: {' '.join(str(error).split())}", file=sys.stderr)  # one line
        return USAGE_ERROR_STATUS
    print(json.dumps({"commit": commit.oid, "url": commit.commit_url}))
    return 0


__all__ = ["PublishError", "check_can_publish", "collect_files", "main", "publish"]

if __name__ == "__main__":
    sys.exit(main())
