"""Model folders checked before loading: missing folders, incomplete weights, reward models passed as encoders,
tokenizers that cannot encode the data."""

import json
import shutil

import pytest

from qrm_hf.modeling.model_files import EncoderError, check_encoder, check_tokenizer, check_weights, load_tokenizer


def test_missing_folder_is_named_for_paths_only(tmp_path):
    with pytest.raises(EncoderError, match=r"--model: \./no/such/encoder: no such folder \(resolved to /"):
        check_encoder("./no/such/encoder")


def test_a_saved_reward_model_is_not_an_encoder(saved_model_dir):
    with pytest.raises(EncoderError, match=r"is a saved query reward model, not an encoder: pass the encoder it was"):
        check_encoder(str(saved_model_dir))


def test_an_encoder_with_truncated_weights_is_named(tiny_encoder_dir, tmp_path):
    folder = tmp_path / "encoder"
    shutil.copytree(tiny_encoder_dir, folder)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])

    with pytest.raises(EncoderError, match=r"--model: .*model\.safetensors is incomplete or corrupt \(100 bytes"):
        check_encoder(str(folder))


def test_sharded_weights_with_a_missing_shard_are_named(tmp_path):
    (tmp_path / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"a.weight": "model-00001-of-00002.safetensors"}})
    )

    with pytest.raises(OSError, match=r"model-00001-of-00002\.safetensors is missing \(listed in model\.safetensors"):
        check_weights(tmp_path)


def test_encoder_folder_without_tokenizer_files_is_refused_before_training(minilm_path, tmp_path, data_dir):
    """transformers builds a 5-token vocabulary for such a folder: every word becomes [UNK]."""
    folder = tmp_path / "minilm-without-tokenizer"
    folder.mkdir()
    shutil.copy(minilm_path / "config.json", folder)
    (folder / "model.safetensors").symlink_to(minilm_path / "model.safetensors")
    queries = [line.split("\t")[0] for line in (data_dir / "train.tsv").read_text().splitlines()[:200]]

    tokenizer = load_tokenizer(str(folder))

    with pytest.raises(
        EncoderError,
        match=rf"--model {folder}: its tokenizer turns 100% of the tokens of the first 200 training queries into the "
        r"unknown token '\[UNK\]' \(more than 50%\): the folder's tokenizer files .* are missing",
    ):
        check_tokenizer(tokenizer, queries, str(folder))


def test_tokenizer_of_another_model_is_refused(tokenizer):
    check_tokenizer(tokenizer, ["how do owls hunt ?"], "minilm", vocab_size=tokenizer.vocab_size)

    with pytest.raises(EncoderError, match=r"token id \d+, but the encoder's vocabulary has 100 entries"):
        check_tokenizer(tokenizer, ["how do owls hunt ?"], "minilm", vocab_size=100)


def test_a_folder_whose_tokenizer_cannot_be_built_is_named(tiny_encoder_dir, tmp_path):
    """ModernBERT has no slow tokenizer to fall back on: without tokenizer.json transformers cannot build one."""
    folder = tmp_path / "encoder"
    folder.mkdir()
    for name in ("config.json", "model.safetensors"):
        shutil.copy(tiny_encoder_dir / name, folder)

    with pytest.raises(
        EncoderError, match=rf"--model {folder}: no tokenizer could be loaded \(.*\): an encoder folder"
    ):
        load_tokenizer(str(folder))


def test_an_unreachable_hub_encoder_is_named_not_a_traceback(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")

    with pytest.raises(EncoderError, match=r"--model: no-such-org/no-such-encoder is neither a local folder nor a Hub"):
        check_encoder("no-such-org/no-such-encoder")
