"""Double a 2.2 GB checkpoint on disk: `mtlm-grow` (growth_ops.grow_checkpoint) against `cp` and mergekit.

    python benchmarks/grow_checkpoint.py      # writes benchmarks/grow_checkpoint.json beside this file

The source is a Llama-shaped model of TinyLlama-1.1B's shape (hidden 2048, 22 layers, 32 heads / 4 KV
heads, MLP 5632, vocab 32000) with random weights in bfloat16, saved by `save_pretrained` into a
temporary folder (~2.2 GB, deleted at the end). Both tools grow it 22 -> 44 layers with the same plan,
a 2x stack (`--factor 2 --method stack`; for mergekit two slices `layer_range: [0, 22]`), and write
2 GB shards (mergekit counts parameters: `--out-shard-size 1B` is 2 GB of bfloat16).

mergekit is installed by this script into its own virtual environment (`--mergekit-venv`, default
/tmp/mergekit-venv: the CPU torch first, so pip does not fetch CUDA wheels, then mergekit); it is not a
dependency of the project. If it cannot be installed or run, the JSON says why and holds no numbers
for it.

`cp` is the floor: the disk's speed. Depth growth copies each tensor's bytes from the source file to the
grown one (`os.copy_file_range`), so it should take about as long as copying the bytes the grown
checkpoint holds. The `cp` arm runs `cp -r SOURCE OUT/copy-i` once for each i of the factor (2): it
writes the whole source folder twice, 2x the source's bytes, a little more than the grown checkpoint
(whose embeddings and head are not doubled). Times are therefore compared per GB written
(`bytes_written`: the sizes of the files each run leaves). The aim: growth_ops within 1.3x of `cp`.
Two growth_ops arms: `growth_ops` is the whole `mtlm-grow` command, which pays a fixed cost (start
Python, import torch and transformers, plan: the `--dry-run` arm measures it) that `cp` does not;
`growth_ops_call` is `grow_checkpoint` called in a fresh process and timed from after the imports
(plan and write), the library's own time; its `cpu_seconds` are the call's too (`time.process_time`, every
thread), the whole command's are `command_cpu_seconds`.

Every run is a fresh process, the arms taking turns to go first (rotated each repeat). Caches cannot
be dropped without root, so each run starts alike instead: the source is read once right before it (a
warm page cache for every arm), and `sync` first writes out what earlier runs left dirty. Time is wall
time; a `sync` right after each run is timed too (`sync_after_seconds`): "to disk" adds it, the time
until the bytes are on the disk rather than in the page cache. `cpu_seconds` (user and system) is
steadier than wall time on a shared machine. Peak memory is the command's peak resident set size
(`ru_maxrss` of a small wrapper's children), cross-checked by sampling the RSS of the whole process tree
every 10 ms; "peak extra" (peak minus the dry run's) is set against the largest tensor, the bound
growth_ops claims.

A correctness column grows a tiny Qwen2 with per-layer `layer_types` with both tools: the grown config
must have one layer type per layer and load in Transformers. Last, the source is copied tensor by
tensor with each `safe_open` backend, to show why growth_ops reads with `pread`: a memory map keeps
every page read resident, so memory grows with the model.
"""

import argparse
import json
import multiprocessing
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import psutil
import safetensors
import torch
import transformers
from machine import host, load_note
from safetensors import safe_open
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig


@dataclass
class BenchConfig:
    hidden_size: int = 2048
    intermediate_size: int = 5632
    num_hidden_layers: int = 22
    num_attention_heads: int = 32
    num_key_value_heads: int = 4
    vocab_size: int = 32000
    dtype: str = "bfloat16"
    factor: int = 2
    max_shard_bytes: int = 2 * 10**9  # "2GB"; mergekit counts parameters, so it gets this / bytes per parameter
    repeats: int = 3  # fresh processes per tool
    mergekit_version: str = "0.1.5"
    sample_interval_s: float = 0.01  # RSS sampling period of the process tree


def make_source(cfg: BenchConfig, folder: Path) -> None:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size,
        hidden_size=cfg.hidden_size,
        intermediate_size=cfg.intermediate_size,
        num_hidden_layers=cfg.num_hidden_layers,
        num_attention_heads=cfg.num_attention_heads,
        num_key_value_heads=cfg.num_key_value_heads,
    )
    AutoModelForCausalLM.from_config(config, dtype=getattr(torch, cfg.dtype)).save_pretrained(folder)


def make_source_in_fresh_process(cfg: BenchConfig, folder: Path) -> None:
    """`make_source` in a fresh interpreter, so that the 2.2 GB model never sits in this process's memory."""
    maker = multiprocessing.get_context("spawn").Process(target=make_source, args=(cfg, folder))
    maker.start()
    maker.join()


def warm_source(folder: Path, chunk_bytes: int = 8 * 2**20) -> None:
    """Read every file of `folder` once, so that each arm starts with the source in the page cache."""
    buffer = bytearray(chunk_bytes)
    for path in folder.iterdir():
        with open(path, "rb", buffering=0) as file:
            while file.readinto(buffer):
                pass


def folder_bytes(folder: Path) -> int:
    return sum(path.stat().st_size for path in folder.rglob("*") if path.is_file())


def checkpoint_bytes(folder: Path) -> dict:
    sizes = {}
    for path in folder.glob("*.safetensors"):
        with safe_open(path, "pt") as handle:
            for name in handle.keys():
                view = handle.get_slice(name)
                sizes[name] = view[:0].element_size() * torch.Size(view.get_shape()).numel()
    return {"total": sum(sizes.values()), "largest_tensor": max(sizes.values()), "files": len(list(folder.iterdir()))}


def install_mergekit(venv: Path, version: str) -> tuple[Path | None, str | None]:
    """mergekit-yaml in its own virtual environment, or the reason it could not be installed."""
    executable = venv / "bin" / "mergekit-yaml"
    if executable.exists():
        return executable, None
    pip = venv / "bin" / "pip"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(pip), "install", "--quiet", f"torch=={torch.__version__.split('+')[0]}"],  # the CPU build, first
        [str(pip), "install", "--quiet", f"mergekit=={version}"],
    ]
    for step in steps:
        result = subprocess.run(step, capture_output=True, text=True)
        if result.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {result.stderr[-1500:]}"
    return executable, None


def mergekit_config(src: Path, num_layers: int, factor: int, dtype: str) -> str:
    slices = "".join(
        f"  - sources:\n      - model: {src}\n        layer_range: [0, {num_layers}]\n" for _ in range(factor)
    )
    return f"slices:\n{slices}merge_method: passthrough\ndtype: {dtype}\n"


# Runs the command under a small Python process and reports the command's peak RSS. Measured from this
# benchmark's own process, the peak would include ours: a child's ru_maxrss keeps the high-water mark of the
# memory it was forked from.
_PEAK_RSS_WRAPPER = """
import json, resource, subprocess, sys
returncode = subprocess.run(sys.argv[2:]).returncode
usage = resource.getrusage(resource.RUSAGE_CHILDREN)
cpu_seconds = usage.ru_utime + usage.ru_stime
open(sys.argv[1], "w").write(json.dumps({"returncode": returncode, "peak_kib": usage.ru_maxrss, "cpu": cpu_seconds}))
"""

# `grow_checkpoint` in a fresh process, timed from after the imports: the library's own time (plan and write),
# without the start of Python, torch and transformers that the whole command (and the dry run) pays.
_TIMED_CALL = """
import json, sys, time
import growth_ops.checkpoint
from growth_ops import GrowthSpec, grow_checkpoint
src, out, factor, max_shard_size, report = sys.argv[1:6]
start, cpu_start = time.perf_counter(), time.process_time()
grow_checkpoint(src, out, GrowthSpec(depth=int(factor), depth_method="stack"), max_shard_size=int(max_shard_size))
seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start
open(report, "w").write(json.dumps({"seconds": seconds, "cpu_seconds": cpu_seconds}))
"""


def measure(command: list[str], interval: float, workdir: Path) -> dict:
    """Run `command` in a fresh process: wall time, peak RSS, and the sampled peak RSS of its process tree."""
    report = workdir / "peak_rss.json"
    start = time.perf_counter()
    process = subprocess.Popen(
        [sys.executable, "-c", _PEAK_RSS_WRAPPER, str(report), *command],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    tree_peak, done = 0, threading.Event()
    output = []

    def sample():
        nonlocal tree_peak
        root = psutil.Process(process.pid)
        while not done.is_set():
            try:
                tree_peak = max(tree_peak, sum(p.memory_info().rss for p in [root, *root.children(recursive=True)]))
            except psutil.Error:
                pass
            time.sleep(interval)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    reader = threading.Thread(target=lambda: output.append(process.stdout.read()), daemon=True)
    reader.start()
    process.wait()
    seconds = time.perf_counter() - start
    done.set()
    sampler.join()
    reader.join()
    measured = json.loads(report.read_text())
    return {
        "seconds": seconds,
        "cpu_seconds": measured["cpu"],  # user and system: what the command ran, whatever else the cores ran
        "peak_rss_bytes": measured["peak_kib"] * 1024,  # Linux reports KiB
        "peak_tree_rss_sampled_bytes": tree_peak,  # the command and the small wrapper together
        "returncode": measured["returncode"],
        "output_tail": output[0].decode(errors="replace")[-600:] if measured["returncode"] else "",
    }


# Copies every tensor of a file to another, one at a time, as grow_checkpoint does, with one safetensors backend.
_COPY_WITH_BACKEND = """
import json, sys, psutil, torch
from safetensors import safe_open
source, backend, copy = sys.argv[1:4]
process = psutil.Process()
with safe_open(source, "pt", backend=backend) as handle, open(copy, "wb") as sink:
    before = peak = process.memory_info().rss
    for name in handle.keys():
        tensor = handle.get_tensor(name)
        sink.write(memoryview(tensor.reshape(-1).view(torch.uint8).numpy()))
        peak = max(peak, process.memory_info().rss)  # while the tensor is alive
print(json.dumps(peak - before))
"""


def reader_backend_check(src: Path, workdir: Path) -> dict:
    """Why grow_checkpoint reads with `pread`: the peak memory of a tensor-by-tensor copy with each backend."""
    report = {}
    for backend in ("mmap", "pread"):
        result = subprocess.run(
            [sys.executable, "-c", _COPY_WITH_BACKEND, str(src / "model.safetensors"), backend, str(workdir / "copy")],
            capture_output=True,
            text=True,
        )
        report[f"{backend}_peak_extra_gib"] = int(result.stdout.strip()) / 2**30 if result.returncode == 0 else None
        (workdir / "copy").unlink(missing_ok=True)
    return report


def same_checkpoint(a: Path, b: Path) -> dict:
    """Compare two checkpoints tensor by tensor (one tensor pair in memory at a time), and their configs."""

    def locate(folder):
        return {n: p for p in folder.glob("*.safetensors") for n in safe_open(p, "pt").keys()}

    left, right = locate(a), locate(b)
    equal = left.keys() == right.keys()
    for name in sorted(left.keys() & right.keys()):
        with safe_open(left[name], "pt") as x, safe_open(right[name], "pt") as y:
            equal = equal and torch.equal(x.get_tensor(name), y.get_tensor(name))
    configs = [json.loads((folder / "config.json").read_text()) for folder in (a, b)]
    differing = sorted(k for k in configs[0].keys() | configs[1].keys() if configs[0].get(k) != configs[1].get(k))
    return {"tensors_equal": equal, "tensor_count": len(left), "config_keys_differing": differing}


def per_layer_config_check(workdir: Path, mergekit: Path | None) -> dict:
    """Grow a tiny Qwen2 whose layers differ (`layer_types`) with both tools; is the grown config whole?"""
    torch.manual_seed(0)
    config = AutoConfig.for_model(
        "qwen2",
        vocab_size=99,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=3,
        num_attention_heads=4,
        num_key_value_heads=2,
        use_sliding_window=True,
        sliding_window=4,
        max_window_layers=1,
    )
    src = workdir / "qwen2"
    AutoModelForCausalLM.from_config(config).save_pretrained(src)
    expected = [config.layer_types[s] for s in list(range(3)) * 2]
    commands = {"growth_ops": [sys.executable, "-m", "growth_ops.cli", str(src), str(workdir / "qwen2-growth_ops")]}
    commands["growth_ops"] += ["--factor", "2"]
    if mergekit:
        (workdir / "qwen2.yml").write_text(mergekit_config(src, 3, 2, "float32"))
        commands["mergekit"] = [str(mergekit), str(workdir / "qwen2.yml"), str(workdir / "qwen2-mergekit")]
        commands["mergekit"] += ["--lazy-unpickle", "--no-copy-tokenizer"]
    report = {"source_layer_types": config.layer_types, "expected_layer_types": expected}
    for tool, command in commands.items():
        result = subprocess.run(command, capture_output=True, text=True)
        out = Path(command[2] if tool == "mergekit" else command[4])
        entry = {"returncode": result.returncode, "files_written": sorted(p.name for p in out.iterdir())}
        if result.returncode:
            entry["error"] = [line for line in result.stderr.splitlines() if "Error" in line][-1:]
        if (out / "config.json").exists():
            grown = json.loads((out / "config.json").read_text())
            entry["num_hidden_layers"], entry["layer_types"] = grown["num_hidden_layers"], grown.get("layer_types")
            try:
                AutoModelForCausalLM.from_pretrained(out)
                entry["loads_in_transformers"] = True
            except Exception as error:  # what a user would see; recorded, not raised
                entry["loads_in_transformers"] = f"{type(error).__name__}: {str(error)[:300]}"
        entry["correct"] = entry.get("layer_types") == expected and entry.get("loads_in_transformers") is True
        report[tool] = entry
    return report


def summarise(runs: list[dict]) -> dict:
    seconds = statistics.median(r["seconds"] for r in runs)
    to_disk = statistics.median(r["seconds"] + r["sync_after_seconds"] for r in runs)
    gigabytes = statistics.median(r["bytes_written"] for r in runs) / 1e9
    return {
        "median_seconds": seconds,
        "median_seconds_to_disk": to_disk,
        "median_bytes_written": gigabytes * 1e9,
        "seconds_per_gb_written": seconds / gigabytes if gigabytes else None,
        "seconds_to_disk_per_gb_written": to_disk / gigabytes if gigabytes else None,
        "median_cpu_seconds": statistics.median(r["cpu_seconds"] for r in runs),
        "median_peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in runs) / 2**30,
        "max_peak_tree_rss_sampled_gib": max(r["peak_tree_rss_sampled_bytes"] for r in runs) / 2**30,
        "all_succeeded": all(r["returncode"] == 0 for r in runs),
    }


def against_cp(runs: dict[str, list[dict]], summary: dict) -> dict:
    """growth_ops' time over cp's, per GB written: the whole command, and the `grow_checkpoint` call alone."""
    cp = summary["cp"]

    def per_gb(run: dict) -> float:
        return run["seconds"] / (run["bytes_written"] / 1e9)

    report = {
        "cp_copies": "the source folder (weights, config, generation config), `factor` times: cp -r SOURCE OUT/copy-i",
        "fixed_seconds_of_the_command": summary["growth_ops_dry_run"]["median_seconds"],  # Python, torch, plan
        "aim": 1.3,
    }
    for arm in ("growth_ops", "growth_ops_call"):
        ours = summary[arm]
        ratio = ours["seconds_per_gb_written"] / cp["seconds_per_gb_written"]
        report[arm] = {
            "time": ours["median_seconds"] / cp["median_seconds"],
            "seconds_per_gb_written": ratio,
            "seconds_per_gb_written_per_repeat": [
                per_gb(a) / per_gb(b) for a, b in zip(runs[arm], runs["cp"], strict=True)
            ],
            "seconds_to_disk_per_gb_written": ours["seconds_to_disk_per_gb_written"]
            / cp["seconds_to_disk_per_gb_written"],
            "aim_met": ratio <= report["aim"],
        }
    return report


def machine() -> dict:
    return {
        **host(),
        "ram_bytes": psutil.virtual_memory().total,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "safetensors": safetensors.__version__,
        "load_average_1_5_15_min_at_start": os.getloadavg(),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mergekit-venv", type=Path, default=Path("/tmp/mergekit-venv"))
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary checkpoints go")
    parser.add_argument("--repeats", type=int, default=BenchConfig.repeats)
    args = parser.parse_args()
    cfg = BenchConfig(repeats=args.repeats)
    workdir = Path(tempfile.mkdtemp(prefix="grow_checkpoint_bench-", dir=args.workdir))
    result = {"what": __doc__.splitlines()[0], "config": asdict(cfg), "machine": machine()}
    try:
        src = workdir / "source"
        make_source_in_fresh_process(cfg, src)
        result["source"] = checkpoint_bytes(src)
        mergekit, why_not = install_mergekit(args.mergekit_venv, cfg.mergekit_version)
        result["mergekit"] = {"version": cfg.mergekit_version, "venv": str(args.mergekit_venv), "unavailable": why_not}
        (workdir / "stack.yml").write_text(mergekit_config(src, cfg.num_hidden_layers, cfg.factor, cfg.dtype))
        params_per_shard = str(cfg.max_shard_bytes // getattr(torch, cfg.dtype).itemsize)

        def command(tool: str, out: Path) -> list[str]:
            if tool in ("growth_ops", "growth_ops_dry_run"):
                args_ = [
                    "--factor",
                    str(cfg.factor),
                    "--method",
                    "stack",
                    "--max-shard-size",
                    str(cfg.max_shard_bytes),
                ]
                dry_run = ["--dry-run"] if tool == "growth_ops_dry_run" else []
                return [sys.executable, "-m", "growth_ops.cli", str(src), str(out), *args_, *dry_run]
            if tool == "growth_ops_call":
                timed = [str(src), str(out), str(cfg.factor), str(cfg.max_shard_bytes), str(workdir / "call.json")]
                return [sys.executable, "-c", _TIMED_CALL, *timed]
            if tool == "cp":
                copies = 'mkdir "$1" && for i in $(seq "$2"); do cp -r "$0" "$1/copy-$i" || exit 1; done'
                return ["sh", "-c", copies, str(src), str(out), str(cfg.factor)]
            flags = ["--lazy-unpickle", "--no-copy-tokenizer", "--out-shard-size", params_per_shard]
            return [str(mergekit), str(workdir / "stack.yml"), str(out), *flags]

        def timed_run(tool: str) -> dict:
            out = workdir / f"{tool}-out"
            shutil.rmtree(out, ignore_errors=True)
            warm_source(src)
            os.sync()
            run = measure(command(tool, out), cfg.sample_interval_s, workdir)
            start = time.perf_counter()
            os.sync()
            run["sync_after_seconds"] = time.perf_counter() - start
            run["bytes_written"] = folder_bytes(out) if out.exists() else 0
            if tool == "growth_ops_call" and run["returncode"] == 0:
                # The call's own time and CPU (every thread of the process); the command's include the imports.
                call = json.loads((workdir / "call.json").read_text())
                run["command_seconds"], run["seconds"] = run["seconds"], call["seconds"]
                run["command_cpu_seconds"], run["cpu_seconds"] = run["cpu_seconds"], call["cpu_seconds"]
            print(tool, run, flush=True)
            return run

        tools = ["growth_ops", "growth_ops_call", "cp"] + (["mergekit"] if mergekit else [])
        runs = {tool: [] for tool in tools} | {"growth_ops_dry_run": []}
        for repeat in range(cfg.repeats):
            runs["growth_ops_dry_run"].append(timed_run("growth_ops_dry_run"))
            for tool in tools[repeat % len(tools) :] + tools[: repeat % len(tools)]:
                runs[tool].append(timed_run(tool))
        result["runs"] = runs
        result["grown"] = checkpoint_bytes(workdir / "growth_ops-out")
        summary = {tool: summarise(rs) for tool, rs in runs.items()}
        ours, fixed = summary["growth_ops"], summary["growth_ops_dry_run"]
        ours["peak_extra_over_dry_run_gib"] = ours["median_peak_rss_gib"] - fixed["median_peak_rss_gib"]
        ours["largest_tensor_gib"] = result["source"]["largest_tensor"] / 2**30
        ours["model_gib"] = result["source"]["total"] / 2**30
        summary["growth_ops_over_cp"] = against_cp(runs, summary)
        if mergekit:
            theirs = summary["mergekit"]
            summary["mergekit_over_growth_ops"] = {
                "time": theirs["median_seconds"] / ours["median_seconds"],
                "peak_rss": theirs["median_peak_rss_gib"] / ours["median_peak_rss_gib"],
            }
            result["outputs_compared"] = same_checkpoint(workdir / "growth_ops-out", workdir / "mergekit-out")
        result["summary"] = summary
        loads = result["machine"]["load_average_1_5_15_min_at_start"], os.getloadavg()
        result["machine"]["load_average_1_5_15_min_after_the_timed_runs"] = loads[1]
        result["machine"]["note"] = load_note(list(loads))
        result["per_layer_config_check"] = per_layer_config_check(workdir, mergekit)
        result["reader_backends"] = reader_backend_check(src, workdir)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    path = Path(__file__).with_suffix(".json")
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result.get("summary"), indent=2))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
