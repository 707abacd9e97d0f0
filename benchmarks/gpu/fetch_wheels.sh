#!/usr/bin/env bash
# Download, here, the wheels the GPU machine lacks (it has no network): the versions of constraints.txt where it
# pins them, for the machine's CPython 3.12 on x86_64. The device tool then carries .whl/ (ignored by git through
# .git/info/exclude) and benchmarks/gpu/run.sh installs them with --no-index --no-deps.
# The GPU machine's image already has torch, triton, accelerate, tokenizers, huggingface_hub, numpy, pandas,
# pyarrow, fsspec, pyyaml, tiktoken, pillow and requests; the list below is what this project needs beyond them.
set -euo pipefail
cd "$(dirname "$0")/../.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
pinned() { grep -i "^$1==" constraints.txt | head -1 || true; }
wheels=(transformers mistral_common datasets dill multiprocess pydantic pydantic_core annotated-types
        typing-inspection pydantic-extra-types pycountry jsonschema jsonschema-specifications referencing rpds-py)
specs=()
for name in "${wheels[@]}"; do spec=$(pinned "$name"); specs+=("${spec:-$name}"); done
specs+=("liger-kernel")  # not in constraints.txt: it is the gpu extra, CUDA only
python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "${specs[@]}"
ls -l .whl
