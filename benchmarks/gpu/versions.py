"""Print and write the versions the GPU run used, and the device it found."""

import importlib.metadata
import json
import platform
import sys
from pathlib import Path

import torch

PACKAGES = (
    "torch",
    "transformers",
    "accelerate",
    "safetensors",
    "liger-kernel",
    "triton",
    "mistral-common",
    "datasets",
)


def version_of(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


if __name__ == "__main__":
    report = {
        "python": platform.python_version(),
        "packages": {name: version_of(name) for name in PACKAGES},
        "cuda": torch.version.cuda,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else platform.processor() or "cpu",
    }
    Path(sys.argv[1]).write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
