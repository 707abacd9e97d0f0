#!/usr/bin/env bash
# The GPU path in one command: carried wheels, CUDA tests, throughput against Llama, the M1 trainer with growth.
#
#   benchmarks/gpu/fetch_wheels.sh          # here, where PyPI is reachable: the wheels the GPU machine lacks, in .whl/
#   benchmarks/gpu/run.sh "$OUT"            # on one H200 (the device tool, carrying .whl): at most 8 minutes
#   benchmarks/gpu/run.sh OUT_DIR --tiny    # on CPU, under 2 minutes (tests/recipes/test_gpu_script.py runs it)
#
# Writes OUT_DIR/log.txt, versions.json, cuda_tests.xml, matmul.json, throughput.json, train_losses.jsonl and
# gpu.json (the summary: tokens/s and MFU of each contender and of the trainer before and after growth, the
# projected time of the card's 3.5B tokens). PYTHON picks the interpreter (default python3).
set -euo pipefail
cd "$(dirname "$0")/../.."
out=${1:?usage: benchmarks/gpu/run.sh OUT_DIR [--tiny]}
tiny=${2:-}
if [[ -n "$tiny" && "$tiny" != "--tiny" ]]; then echo "unknown option $tiny: the only option is --tiny" >&2; exit 2; fi
mkdir -p "$out"
out=$(cd "$out" && pwd)
exec > >(tee "$out/log.txt") 2>&1
py=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
run_dir=$(mktemp -d)
trap 'rm -rf "$run_dir"' EXIT

echo "== a. carried wheels and versions"
if compgen -G ".whl/*.whl" > /dev/null; then
    "$py" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl
    export PYTHONPATH=/tmp/site:$PWD
else
    echo "no .whl/ folder: using the interpreter's packages"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
"$py" benchmarks/gpu/versions.py "$out/versions.json"

echo "== b. CUDA tests"
"$py" -m pytest -q -p no:cacheprovider -m cuda tests/model/test_cuda.py --junitxml "$out/cuda_tests.xml"

if [[ -n "$tiny" ]]; then
    device=cpu matmul=(--size 256) config=benchmarks/gpu/tiny.yaml
    bench=(--shapes m1-tiny --precision fp32 --seq-len 64 --warmup-steps 1 --timed-steps 1)
    launch=()
else
    device=cuda matmul=(--size 8192) config=benchmarks/gpu/m1_h200.yaml
    bench=(--shapes m1-base m1 --precision bf16 --batch-size 16 --warmup-steps 3 --timed-steps 10)
    launch=(--mixed_precision bf16)
fi

echo "== c. matmul ceiling and throughput (Llama, MTLM, both fast paths)"
"$py" benchmarks/gpu/matmul_ceiling.py --device "$device" "${matmul[@]}" --out "$out/matmul.json"
"$py" benchmarks/throughput.py --device "$device" "${bench[@]}" --fast-path compile liger --out "$out/throughput.json"

echo "== d. the M1 trainer, growth included"
"$py" -m accelerate.commands.launch --num_processes 1 --num_machines 1 --dynamo_backend no "${launch[@]}" \
    examples/m1/train.py --config "$config" --output-dir "$run_dir/m1"
cp "$run_dir/m1/train_losses.jsonl" "$out/"
"$py" benchmarks/gpu/summarize.py --run "$run_dir/m1" --matmul "$out/matmul.json" \
    --throughput "$out/throughput.json" --out "$out/gpu.json"
