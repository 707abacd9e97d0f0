"""Reshard a 2.2 GB checkpoint as `publish` does: streamed (`mtlm_shards.reshard`) against load-and-save.

    python benchmarks/reshard.py      # writes benchmarks/reshard.json beside this file

The source is the checkpoint of `grow_checkpoint.py` (TinyLlama-1.1B's shape, random bfloat16 weights,
one 2.2 GB `model.safetensors`), resharded into 500 MB files. "streamed" is what `mtlm_hf.publish` runs
now (each tensor's bytes copied from file to file, no tensor built); "load_whole" is what it ran before: `safetensors.torch.load_file` of every weights file, then
huggingface_hub's `save_torch_state_dict`. "imports" runs the imports only, the fixed cost of both.

Every run is a fresh process, the two ways alternating, measured as in `grow_checkpoint.py` (wall time,
peak RSS of the command). Both outputs are checked to hold the source's tensors, equal byte for byte.
"""

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from grow_checkpoint import BenchConfig, checkpoint_bytes, machine, make_source_in_fresh_process, measure
from safetensors import safe_open

MAX_SHARD_SIZE = "500MB"
COMMANDS = {
    "imports": "import mtlm_shards, huggingface_hub, safetensors.torch",
    "streamed": "import sys; from pathlib import Path; from mtlm_shards import reshard; "
    "reshard(Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3])",
    "load_whole": "import sys; from pathlib import Path; import mtlm_shards; "
    "from huggingface_hub import save_torch_state_dict; from safetensors.torch import load_file; "
    "state = {}; [state.update(load_file(p)) for p in sorted(Path(sys.argv[1]).glob('*.safetensors'))]; "
    "save_torch_state_dict(state, sys.argv[2], max_shard_size=sys.argv[3], metadata={'format': 'pt'})",
}


def same_tensors(a: Path, b: Path) -> bool:
    def tensors(folder: Path) -> dict[str, Path]:
        found = {}
        for path in folder.glob("*.safetensors"):
            with safe_open(path, "pt") as handle:
                found.update(dict.fromkeys(handle.keys(), path))
        return found

    left, right = tensors(a), tensors(b)
    if left.keys() != right.keys():
        return False
    for name, path in left.items():  # one tensor pair in memory at a time
        with safe_open(path, "pt") as x, safe_open(right[name], "pt") as y:
            if not torch.equal(x.get_tensor(name), y.get_tensor(name)):
                return False
    return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, default=None, help="where the temporary checkpoints go")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    cfg = BenchConfig(repeats=args.repeats)
    workdir = Path(tempfile.mkdtemp(prefix="reshard_bench-", dir=args.workdir))
    result = {"what": __doc__.splitlines()[0], "max_shard_size": MAX_SHARD_SIZE, "machine": machine()}
    try:
        src = workdir / "source"
        make_source_in_fresh_process(cfg, src)
        result["source"] = checkpoint_bytes(src)
        runs = {way: [] for way in COMMANDS}
        for repeat in range(cfg.repeats):
            order = list(COMMANDS) if repeat % 2 == 0 else ["imports", "load_whole", "streamed"]
            for way in order:
                out = workdir / f"{way}-out"
                shutil.rmtree(out, ignore_errors=True)
                out.mkdir()
                command = [sys.executable, "-c", COMMANDS[way], str(src), str(out), MAX_SHARD_SIZE]
                runs[way].append(measure(command, cfg.sample_interval_s, workdir))
                print(way, repeat, runs[way][-1], flush=True)
        result["runs"] = runs
        result["resharded"] = {way: checkpoint_bytes(workdir / f"{way}-out") for way in ("streamed", "load_whole")}
        result["streamed_equals_source"] = same_tensors(src, workdir / "streamed-out")
        result["load_whole_equals_source"] = same_tensors(src, workdir / "load_whole-out")
        summary = {
            way: {
                "median_seconds": statistics.median(r["seconds"] for r in rs),
                "median_peak_rss_gib": statistics.median(r["peak_rss_bytes"] for r in rs) / 2**30,
                "all_succeeded": all(r["returncode"] == 0 for r in rs),
            }
            for way, rs in runs.items()
        }
        fixed = summary["imports"]["median_peak_rss_gib"]
        for way in ("streamed", "load_whole"):
            summary[way]["peak_extra_over_imports_gib"] = summary[way]["median_peak_rss_gib"] - fixed
        summary["largest_tensor_gib"] = result["source"]["largest_tensor"] / 2**30
        summary["source_gib"] = result["source"]["total"] / 2**30
        result["summary"] = summary
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    out = Path(__file__).with_suffix(".json")
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result["summary"], indent=2))


if __name__ == "__main__":
    main()
