"""A model downloaded from the Hub loads by repo id: with qrm_hf, and with plain transformers where it is absent.

No network: the test writes the cache a Hub download leaves behind (huggingface_hub's layout: blobs named by
their etag, snapshot files as relative symlinks to them, refs/main holding the commit) into a temporary
HF_HOME, then loads `org/name` offline in subprocesses, since the cache location is fixed at import time.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from qrm_hf import QueryRewardConfig, QueryRewardModel
from qrm_hf.modeling.model_files import save_reward_model

REPO_ID = "org/name"
QUERIES = ["how do owls hunt ?", "owls", "what is the capital of france", "cheap flights to rome in may", ""]
# Files the Hub stores in LFS; their etag (and blob name) is the sha256 of the content, others' the git sha1.
LFS_SUFFIXES = (".safetensors", ".bin", ".pt")

WITH_QRM = """
import json, sys
import torch
from transformers import AutoTokenizer
from qrm_hf import QueryRewardModel
from qrm_hf.scoring.scorer import QueryScorer

queries, commit = json.loads(sys.argv[1]), sys.argv[2]
model = QueryRewardModel.from_pretrained("org/name").eval()
tokenizer = AutoTokenizer.from_pretrained("org/name", trust_remote_code=True)
with torch.no_grad():
    direct = [model(**tokenizer([query], return_tensors="pt")).scores.item() for query in queries]
scorer = QueryScorer.from_pretrained("org/name", device="cpu", batch_size=1)
pinned = QueryScorer.from_pretrained("org/name", revision=commit, device="cpu", batch_size=1)
print(json.dumps({
    "QueryRewardModel": direct,
    "QueryScorer": scorer.score(queries, raw=True),
    "QueryScorer@commit": pinned.score(queries, raw=True),
}))
"""

WITHOUT_QRM = """
import importlib.util, json, os, sys
# The editable install puts the checkout on sys.path through a .pth file; drop every entry that holds qrm_hf.
sys.path[:] = [entry for entry in sys.path if not os.path.isdir(os.path.join(entry or os.getcwd(), "qrm_hf"))]
assert importlib.util.find_spec("qrm_hf") is None, "qrm_hf is still importable"

import torch
from transformers import AutoModel, AutoTokenizer, pipeline

queries = json.loads(sys.argv[1])
model = AutoModel.from_pretrained("org/name", trust_remote_code=True).eval()
assert type(model).__module__.startswith("transformers_modules."), type(model).__module__
tokenizer = AutoTokenizer.from_pretrained("org/name", trust_remote_code=True)
with torch.no_grad():
    auto = [model(**tokenizer([query], return_tensors="pt")).scores.item() for query in queries]
classifier = pipeline("text-classification", model="org/name", trust_remote_code=True, function_to_apply="none")
piped = [result["score"] for result in classifier(queries)]
assert "qrm_hf" not in sys.modules
print(json.dumps({"AutoModel": auto, "pipeline": piped}))
"""


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def write_hub_cache(hf_home: Path, repo_id: str, folder: Path) -> str:
    """Lay `folder` out in `hf_home` exactly as `snapshot_download(repo_id)` would; return the commit hash."""
    storage = hf_home / "hub" / ("models--" + repo_id.replace("/", "--"))
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    snapshot = storage / "snapshots" / commit
    for source in sorted(path for path in folder.rglob("*") if path.is_file()):
        data = source.read_bytes()
        etag = hashlib.sha256(data).hexdigest() if source.suffix in LFS_SUFFIXES else git_blob_sha1(data)
        blob = storage / "blobs" / etag
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = snapshot / source.relative_to(folder)
        pointer.parent.mkdir(parents=True, exist_ok=True)
        pointer.symlink_to(os.path.relpath(blob, pointer.parent))
    (storage / "refs").mkdir(parents=True)
    (storage / "refs" / "main").write_text(commit)  # no newline: huggingface_hub reads it verbatim
    return commit


def run_offline(script: str, hf_home: Path, cwd: Path, *args: str, isolated: bool = False) -> dict[str, list[float]]:
    """Run `script` with the temporary cache, offline; `isolated` (-I) also ignores PYTHON* variables."""
    overridden = ("PYTHONPATH", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE", "HF_MODULES_CACHE", "TRANSFORMERS_CACHE")
    env = {key: value for key, value in os.environ.items() if key not in overridden}
    env.update(HF_HOME=str(hf_home), HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", TOKENIZERS_PARALLELISM="false")
    command = [sys.executable, *(["-I"] if isolated else []), "-c", script, *args]
    result = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def saved_model(tmp_path_factory, tiny_encoder_config, tokenizer) -> tuple[Path, list[float]]:
    """A saved tiny reward model and the scores it gives QUERIES, one query at a time, before saving."""
    torch.manual_seed(0)
    model = QueryRewardModel(QueryRewardConfig(encoder=tiny_encoder_config.to_dict())).eval()
    with torch.no_grad():
        # A random tiny model scores all queries within ~1e-3; spread them so a mix-up shows.
        model.head.layers[-1].weight.mul_(100)
        scores = [model(**tokenizer([query], return_tensors="pt")).scores.item() for query in QUERIES]
    folder = tmp_path_factory.mktemp("reward-model")
    save_reward_model(model, tokenizer, folder)
    return folder, scores


@pytest.fixture(scope="module")
def hub_cache(tmp_path_factory, saved_model) -> tuple[Path, str]:
    hf_home = tmp_path_factory.mktemp("hf_home")
    return hf_home, write_hub_cache(hf_home, REPO_ID, saved_model[0])


def test_cache_layout_is_what_huggingface_hub_resolves(hub_cache, saved_model):
    from huggingface_hub import try_to_load_from_cache

    hf_home, commit = hub_cache
    cached = try_to_load_from_cache(REPO_ID, "model.safetensors", cache_dir=hf_home / "hub")

    assert cached == str(hf_home / "hub" / "models--org--name" / "snapshots" / commit / "model.safetensors")
    assert Path(cached).is_symlink()
    assert Path(cached).read_bytes() == (saved_model[0] / "model.safetensors").read_bytes()
    assert {path.name for path in Path(cached).parent.iterdir()} >= {"config.json", "modeling_qrm.py", "tokenizer.json"}


@pytest.mark.slow
def test_repo_id_loads_with_qrm_hf_installed(hub_cache, saved_model, tmp_path):
    hf_home, commit = hub_cache
    expected = saved_model[1]
    assert max(expected) - min(expected) > 1e-2

    scores = run_offline(WITH_QRM, hf_home, tmp_path, json.dumps(QUERIES), commit)

    for loader, values in scores.items():
        assert values == pytest.approx(expected, abs=1e-5), loader


@pytest.mark.slow
def test_repo_id_loads_with_plain_transformers_without_qrm_hf(hub_cache, saved_model, tmp_path):
    hf_home, _ = hub_cache

    scores = run_offline(WITHOUT_QRM, hf_home, tmp_path, json.dumps(QUERIES), isolated=True)

    assert set(scores) == {"AutoModel", "pipeline"}
    for loader, values in scores.items():
        assert values == pytest.approx(saved_model[1], abs=1e-5), loader
