"""Publishing (mtlm_hf.publishing) end to end against a Hub-compatible server on 127.0.0.1."""

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import huggingface_hub
import pytest
import torch
from hub_server import LoopbackHub
from huggingface_hub import ModelCard, ModelCardData
from transformers import AutoModelForCausalLM

import mtlm_hf
from mtlm_hf.publishing import PublishError, check_can_publish, publish

TOKEN = "hf_loopback_write_token"
IDS = [[1, 415, 3437, 302, 16107, 349]]  # "The future of AI is" with BOS, in the Mistral tokenizer
MODEL_FILES = {
    ".gitattributes",  # the server's initial commit, as on the Hub
    "README.md",
    "config.json",
    "configuration_mtlm.py",
    "modeling_mtlm.py",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
}


@pytest.fixture
def hub():
    with LoopbackHub(token=TOKEN, lifetime_s=300) as server:
        yield server


@pytest.fixture
def online(monkeypatch):
    """CI exports HF_HUB_OFFLINE=1; these tests talk to the loopback server only, so lift it for this process."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def model_folder(tmp_path):
    """A complete publishable folder: tiny MTLM (Mistral vocabulary), tokenizer, card. Returns (folder, logits)."""
    torch.manual_seed(0)
    config = mtlm_hf.MTLMConfig.from_preset("m1-tiny", vocab_size=32000)
    model = AutoModelForCausalLM.from_config(config).eval()
    folder = tmp_path / "model"
    model.save_pretrained(folder)
    mtlm_hf.mistral_tokenizer().save_pretrained(folder)
    card = ModelCard(f"---\n{ModelCardData(license='mit', library_name='transformers').to_yaml()}\n---\n# tiny\n")
    card.save(folder / "README.md")
    with torch.no_grad():
        logits = model(torch.tensor(IDS)).logits
    return folder, logits


def _tree_hash(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        digest.update(str(path.relative_to(folder)).encode())
        if path.is_file():
            digest.update(path.read_bytes())
    return digest.hexdigest()


DOWNLOAD_AND_LOAD = """
import os
os.environ["HF_HUB_OFFLINE"] = "0"  # set before huggingface_hub reads it; the server is on 127.0.0.1
os.environ["HF_ENDPOINT"] = {endpoint!r}
import json, torch
from huggingface_hub import snapshot_download
from transformers import AutoModelForCausalLM, AutoTokenizer

path = snapshot_download({repo_id!r}, token={token!r}, cache_dir={cache!r})
model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True).eval()
ids = None
if os.path.exists(os.path.join(path, "tokenizer_config.json")):
    ids = AutoTokenizer.from_pretrained(path, trust_remote_code=True)("The future of AI is")["input_ids"]
with torch.no_grad():
    logits = model(torch.tensor({ids})).logits
config = json.load(open(os.path.join(path, "config.json")))
print(json.dumps({{
    "files": sorted(os.listdir(path)),
    "logits": logits.tolist(),
    "ids": ids,
    "auto_map": config.get("auto_map"),
    "module": type(model).__module__,
}}))
"""


def _download(run_without_mtlm, hub, repo_id, tmp_path) -> dict:
    code = DOWNLOAD_AND_LOAD.format(
        endpoint=hub.url, repo_id=repo_id, token=TOKEN, cache=str(tmp_path / "hf_cache"), ids=IDS
    )
    return run_without_mtlm(code)


def test_publish_sends_one_commit_that_loads_without_mtlm_to_the_same_logits(
    hub, online, model_folder, run_without_mtlm, tmp_path
):
    folder, logits = model_folder
    before = _tree_hash(folder)
    commit = publish(folder, "tester/tiny-mtlm", token=TOKEN, endpoint=hub.url, max_shard_size="1MB")

    repo = hub.repos["tester/tiny-mtlm"]
    assert repo.commit_requests == 1 and repo.head.oid == commit.oid
    files = set(repo.head.files)
    shards = {name for name in files if name.startswith("model-") and name.endswith(".safetensors")}
    assert len(shards) >= 2 and "model.safetensors.index.json" in files and "model.safetensors" not in files
    assert files == MODEL_FILES | shards | {"model.safetensors.index.json"}
    assert _tree_hash(folder) == before  # resharding happened elsewhere

    loaded = _download(run_without_mtlm, hub, "tester/tiny-mtlm", tmp_path)
    assert loaded["module"].startswith("transformers_modules")  # the repo's own code, not mtlm_hf
    assert loaded["auto_map"]["AutoModelForCausalLM"] == "modeling_mtlm.MTLMForCausalLM"
    assert loaded["ids"] == IDS[0]
    torch.testing.assert_close(torch.tensor(loaded["logits"]), logits, rtol=0, atol=0)


def _run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m mtlm_hf.publishing ARGS` in a fresh process that may talk to the loopback server."""
    env = {**os.environ, "HF_HUB_OFFLINE": "0", "TRANSFORMERS_OFFLINE": "0", **(env or {})}
    command = [sys.executable, "-m", "mtlm_hf.publishing", *args]
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)


@pytest.mark.slow  # a fresh interpreter: 20-35 s on 2 shared cores
def test_cli_publishes_and_reports_the_commit(hub, model_folder):
    folder, _ = model_folder
    run = _run_cli(str(folder), "tester/cli-mtlm", "--endpoint", hub.url, "--token", TOKEN)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(run.stdout.strip().splitlines()[-1])
    repo = hub.repos["tester/cli-mtlm"]
    assert report["commit"] == repo.head.oid and repo.commit_requests == 1
    assert set(repo.head.files) == MODEL_FILES | {"model.safetensors"}  # 4 MB: under the 5GB default, one file


@pytest.mark.slow  # a fresh interpreter per case: 5-10 s each on 2 shared cores
@pytest.mark.parametrize(
    ("mistake", "message"),
    [
        ("missing folder", "is not a folder"),
        ("no token", "No Hugging Face token"),
        ("bad repo id", "is not a Hub repo id"),
    ],
)
def test_cli_reports_a_users_mistake_in_one_line_with_exit_status_2(hub, model_folder, tmp_path, mistake, message):
    folder, repo_id, token = model_folder[0], "tester/cli-mtlm", ["--token", TOKEN]
    if mistake == "missing folder":
        folder = tmp_path / "no-such-folder"
    elif mistake == "no token":
        token = []
    else:
        repo_id = "tester//cli mtlm"
    # No HF_TOKEN and an empty HF_HOME: no stored login either.
    env = {"HF_TOKEN": "", "HUGGING_FACE_HUB_TOKEN": "", "HF_HOME": str(tmp_path / "hf_home")}
    run = _run_cli(str(folder), repo_id, "--endpoint", hub.url, *token, env=env)
    assert run.returncode == 2, run.stderr[-3000:]
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mtlm-publish: error: ") and message in lines[0], run.stderr
    assert hub.requests == []


PUSH_TO_HUB = """
import os
os.environ.update(HF_HUB_OFFLINE="0", TRANSFORMERS_OFFLINE="0", HF_ENDPOINT={endpoint!r})
import json
import mtlm_hf
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({folder!r})
model.push_to_hub("tester/pushed-mtlm", token={token!r})
print(json.dumps({{"ok": True}}))
"""


@pytest.mark.slow  # two fresh interpreters: 14-28 s on 2 shared cores
def test_push_to_hub_writes_a_repo_that_loads_without_mtlm(hub, model_folder, run_without_mtlm, tmp_path):
    folder, logits = model_folder
    push = subprocess.run(
        [sys.executable, "-c", PUSH_TO_HUB.format(endpoint=hub.url, folder=str(folder), token=TOKEN)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert push.returncode == 0, push.stderr[-3000:]
    assert hub.repos["tester/pushed-mtlm"].commit_requests == 1
    pushed = set(hub.repos["tester/pushed-mtlm"].head.files)
    assert {"config.json", "configuration_mtlm.py", "modeling_mtlm.py", "model.safetensors"} <= pushed

    loaded = _download(run_without_mtlm, hub, "tester/pushed-mtlm", tmp_path)
    assert loaded["ids"] is None  # push_to_hub sends the model only, no tokenizer
    torch.testing.assert_close(torch.tensor(loaded["logits"]), logits, rtol=0, atol=0)


def test_a_refused_token_fails_clearly_and_leaves_everything_as_it_was(hub, online, model_folder):
    folder, _ = model_folder
    before = _tree_hash(folder)
    with pytest.raises(PublishError, match=r"refused the token.*HTTP 401.*HF_TOKEN") as error:
        publish(folder, "tester/denied", token="hf_wrong", endpoint=hub.url)
    assert "tester/denied" in str(error.value) and hub.url in str(error.value)
    assert _tree_hash(folder) == before and hub.repos == {}


def test_an_unreachable_hub_fails_clearly_and_leaves_the_folder_intact(online, model_folder):
    folder, _ = model_folder
    with socket.socket() as probe:  # a port nothing listens on once this block closes it
        probe.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{probe.getsockname()[1]}"
    before = _tree_hash(folder)
    with pytest.raises(PublishError, match=r"Could not reach the Hub at .*--endpoint or HF_ENDPOINT"):
        publish(folder, "tester/nowhere", token=TOKEN, endpoint=dead)
    assert _tree_hash(folder) == before


def test_check_can_publish_answers_before_a_run_without_creating_anything(hub, online):
    check_can_publish("tester/not-yet", token=TOKEN, endpoint=hub.url)  # a repo that does not exist yet passes
    with pytest.raises(PublishError, match=r"refused the token while reading the repo.*HTTP 401"):
        check_can_publish("tester/not-yet", token="hf_wrong", endpoint=hub.url)
    with pytest.raises(PublishError, match="is not a Hub repo id"):
        check_can_publish("not a repo id", token=TOKEN, endpoint=hub.url)
    assert hub.repos == {}


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda f: (f / "tokenizer.json").unlink(), "tokenizer"),
        (lambda f: (f / "README.md").unlink(), "model card"),
        (lambda f: (f / "modeling_mtlm.py").unlink(), "code file modeling_mtlm.py"),
        (lambda f: (f / "pytorch_model.bin").write_bytes(b"pickle"), "pickle files"),
    ],
)
def test_an_incomplete_folder_is_refused_before_anything_is_sent(hub, online, model_folder, damage, message):
    folder, _ = model_folder
    damage(folder)
    with pytest.raises(PublishError, match=message):
        publish(folder, "tester/incomplete", token=TOKEN, endpoint=hub.url)
    assert hub.requests == []


def test_offline_mode_is_named_as_the_obstacle(monkeypatch, model_folder):
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(PublishError, match="HF_HUB_OFFLINE"):
        publish(model_folder[0], "tester/offline", token=TOKEN, endpoint="http://127.0.0.1:9")


def test_a_damaged_weights_file_stops_resharding_with_its_name(hub, online, model_folder):
    folder, _ = model_folder
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    before = _tree_hash(folder)
    with pytest.raises(PublishError, match=r"Resharding the weights failed: .*model.safetensors.*fetch it again"):
        publish(folder, "tester/damaged", token=TOKEN, endpoint=hub.url, max_shard_size="1MB")
    assert _tree_hash(folder) == before and hub.requests == []
