"""`examples/quickstart.py --push-to`: the whole M1 path at a reduced size, published to the loopback Hub in one commit,
loaded back in a fresh process without our packages; and refused before any training when it could not publish."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from datasets import load_dataset
from hub_server import LoopbackHub
from transformers import AutoModelForCausalLM

import mtlm_hf  # noqa: F401  (registers MTLM for the in-process load)

ROOT = Path(__file__).resolve().parents[2]
TOKEN = "hf_loopback_write_token"
REPO_ID = "tester/mtlm1-quickstart"
# A reduced setting: a tiny model, a slice of the embedded corpus (real text), a few steps.
REDUCED = ["--vocab-size", "300", "--hidden-size", "32", "--intermediate-size", "64", "--num-attention-heads", "2"]
REDUCED += ["--seq-len", "32", "--batch-size", "4", "--scratch-steps", "6", "--warmup-steps", "1"]
REDUCED += ["--eval-points", "2", "--eval-blocks", "4", "--ppl-stride", "32"]
IDS = [[5, 17, 42, 99, 7]]


def _sliced_corpus(folder: Path, chars: int = 40_000) -> Path:
    """The embedded corpus with every work cut to its first `chars` characters, so a run takes seconds."""
    embedded = ROOT / "examples" / "data" / "shakespeare"
    for split in ("train", "validation"):
        works = load_dataset("json", data_files=str(embedded / f"{split}.jsonl.gz"), split="train")
        works.map(lambda work: {"text": work["text"][:chars]}).to_json(
            folder / f"{split}.jsonl.gz", compression="gzip"
        )
    return folder


def _quickstart(out: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    command = [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--out", str(out), *args]
    environment = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", "HF_DATASETS_OFFLINE": "1", **env}
    return subprocess.run(command, capture_output=True, text=True, cwd=ROOT, env=environment, timeout=600)


@pytest.mark.slow  # three tiny trainings, the card and the upload in one fresh process, the load in another
def test_quickstart_publishes_one_commit_that_loads_without_mtlm_to_the_same_logits(tmp_path, run_without_mtlm):
    corpus = _sliced_corpus(tmp_path / "corpus")
    out = tmp_path / "quickstart"
    with LoopbackHub(token=TOKEN, lifetime_s=600) as hub:
        publishing = ["--data-dir", str(corpus), "--push-to", REPO_ID]
        run = _quickstart(out, *REDUCED, *publishing, env={"HF_TOKEN": TOKEN, "HF_ENDPOINT": hub.url})
        assert run.returncode == 0, run.stderr[-4000:]
        repo = hub.repos[REPO_ID]
        assert repo.commit_requests == 1
        folder = out / "grown_model"
        assert set(repo.head.files) == {".gitattributes"} | {p.name for p in folder.iterdir()}
        assert repo.head.files["README.md"] == (folder / "README.md").read_bytes()
        assert f'from_pretrained("{REPO_ID}"' in (folder / "README.md").read_text()

        remote = run_without_mtlm(
            f"""
            import json, os
            os.environ.update(HF_HUB_OFFLINE="0", HF_ENDPOINT={hub.url!r})
            import torch
            from huggingface_hub import snapshot_download
            from transformers import AutoModelForCausalLM, AutoTokenizer
            path = snapshot_download({REPO_ID!r}, token={TOKEN!r}, cache_dir="hf_cache")
            model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
            tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=True)
            with torch.no_grad():
                logits = model(torch.tensor({IDS})).logits
            print(json.dumps({{"module": type(model).__module__, "layers": model.config.num_hidden_layers,
                               "vocab": len(tokenizer), "logits": logits.tolist()}}))
            """
        )
    local = AutoModelForCausalLM.from_pretrained(folder).eval()
    with torch.no_grad():
        logits = local(torch.tensor(IDS)).logits
    assert remote["module"].startswith("transformers_modules") and remote["layers"] == 6 and remote["vocab"] == 300
    torch.testing.assert_close(torch.tensor(remote["logits"]), logits, rtol=0, atol=0)


def _refused(tmp_path: Path, hub_url: str, env: dict[str, str]) -> str:
    """Run the quickstart with --push-to where publishing cannot work; return its one stderr line."""
    out = tmp_path / "quickstart"
    run = _quickstart(out, "--push-to", REPO_ID, "--endpoint", hub_url, env={"HF_HOME": str(tmp_path / "home"), **env})
    assert run.returncode == 2, run.stderr[-3000:]
    assert "corpus:" not in run.stdout and not out.exists()  # stopped before anything was trained or written
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), run.stderr
    return lines[0]


@pytest.mark.slow  # a fresh interpreter per case: 5-10 s each on 2 shared cores
def test_without_a_token_the_quickstart_stops_before_training(tmp_path):
    with LoopbackHub(token=TOKEN, lifetime_s=120) as hub:
        line = _refused(tmp_path, hub.url, env={"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": ""})
        assert "No Hugging Face token" in line and hub.requests == []


@pytest.mark.slow
def test_without_the_hub_the_quickstart_stops_before_training(tmp_path):
    with socket.socket() as probe:  # a port nothing listens on once this block closes it
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    assert "Could not reach the Hub at " + dead in _refused(tmp_path, dead, env={"HF_TOKEN": TOKEN})


@pytest.mark.slow
def test_a_refused_token_stops_the_quickstart_before_training(tmp_path):
    with LoopbackHub(token=TOKEN, lifetime_s=120) as hub:
        line = _refused(tmp_path, hub.url, env={"HF_TOKEN": "hf_wrong"})
        assert "HTTP 401" in line and REPO_ID in line and not hub.repos
