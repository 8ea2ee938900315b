"""Every encoder-specific path on MPNet (the architecture of all-mpnet-base-v2), on a tiny random one: dropout
mapping, layer-wise learning rates, top-layer re-initialisation, pooling, int8, loading without qrm_hf, and
max_length against its positions."""

import json

import pytest
import torch
from conftest import load_without_qrm_hf
from transformers import AutoModel, MPNetModel

from qrm_hf import QRMTrainer, QRMTrainingArguments, QueryRewardConfig, QueryRewardModel
from qrm_hf.modeling.configuration_qrm import encoder_dropout_fields
from qrm_hf.modeling.model_files import EncoderError, check_max_length, encoder_positions, save_reward_model
from qrm_hf.run.config import RunConfig
from qrm_hf.scoring.scorer import QueryScorer, quantize_linear_layers
from qrm_hf.training.build import RunBuilder

QUERIES = ["how do owls hunt ?", "owls hunt", "which form of government is in greece ?"]


@pytest.fixture
def make_mpnet_model(tiny_mpnet_config):
    def build(seed: int = 0, **head):
        torch.manual_seed(seed)
        return QueryRewardModel(QueryRewardConfig(encoder=tiny_mpnet_config.to_dict(), **head))

    return build


def batch(tokenizer, queries=QUERIES):
    return tokenizer(list(queries), padding=True, return_tensors="pt", return_token_type_ids=False)


def test_encoder_dropout_reaches_both_mpnet_dropouts(tiny_mpnet_config, make_mpnet_model, mpnet_tokenizer):
    assert encoder_dropout_fields(tiny_mpnet_config) == ["attention_probs_dropout_prob", "hidden_dropout_prob"]
    assert tiny_mpnet_config.hidden_dropout_prob == 0.1  # MPNet ships 0.1 ...
    model = make_mpnet_model(num_hidden_layers=0, encoder_dropout=0.0).train()
    assert model.config.encoder.hidden_dropout_prob == model.config.encoder.attention_probs_dropout_prob == 0.0
    inputs = batch(mpnet_tokenizer)
    with torch.no_grad():  # ... so only with the encoder's dropout off is training mode deterministic
        pooled = [model.encoder(**inputs).last_hidden_state for _ in range(2)]
    assert torch.equal(*pooled)
    kept = make_mpnet_model(encoder_dropout=None)
    assert kept.config.encoder.hidden_dropout_prob == 0.1


def test_layer_wise_decay_follows_mpnet_layer_names(make_mpnet_model, tmp_path):
    model = make_mpnet_model(num_hidden_layers=0)
    args = QRMTrainingArguments(
        output_dir=str(tmp_path), report_to="none", learning_rate=1e-4, head_lr_multiplier=10.0, layer_lr_decay=0.5
    )
    groups = QRMTrainer(model=model, args=args).create_optimizer().param_groups
    names = {id(parameter): name for name, parameter in model.named_parameters()}
    lr_of = {names[id(parameter)]: group["lr"] for group in groups for parameter in group["params"]}
    assert lr_of["encoder.encoder.layer.1.attention.attn.q.weight"] == pytest.approx(1e-4)
    assert lr_of["encoder.encoder.layer.0.attention.attn.q.weight"] == pytest.approx(5e-5)
    assert lr_of["encoder.embeddings.word_embeddings.weight"] == pytest.approx(2.5e-5)
    # The relative-position bias is shared by every layer: it trains at the top layer's rate.
    assert lr_of["encoder.encoder.relative_attention_bias.weight"] == pytest.approx(1e-4)
    assert all(lr == pytest.approx(1e-3) for name, lr in lr_of.items() if name.startswith("head."))
    assert sorted(lr_of) == sorted(names.values())


def test_reinit_top_layers_renews_only_the_top_mpnet_block(tiny_mpnet_config, tmp_path):
    torch.manual_seed(0)
    encoder = MPNetModel(tiny_mpnet_config)
    builder = RunBuilder(RunConfig(model="x"), {"num_hidden_layers": 0}, encoder)
    pretrained = {f"encoder.{name}": tensor for name, tensor in encoder.state_dict().items()}
    _, renewed = builder.build({"reinit_top_layers": 1}, tmp_path / "a")
    changed = {
        name
        for name, tensor in renewed.state_dict().items()
        if name in pretrained and not torch.equal(tensor, pretrained[name])
    }
    assert "encoder.encoder.layer.1.attention.attn.o.weight" in changed
    assert "encoder.encoder.layer.1.output.dense.weight" in changed
    assert all(".layer.1." in name for name in changed)
    with pytest.raises(ValueError, match="reinit_top_layers=3, but the encoder has 2 blocks"):
        builder.build({"reinit_top_layers": 3}, tmp_path / "b")


@pytest.mark.parametrize("pooling", ["mean", "cls"])
def test_padding_does_not_change_an_mpnet_score(make_mpnet_model, mpnet_tokenizer, pooling):
    """MPNet pads with id 1 and counts positions from after it: a query scores the same alone or padded."""
    model = make_mpnet_model(pooling=pooling).eval()
    with torch.no_grad():
        padded = model(**batch(mpnet_tokenizer)).scores
        alone = torch.cat([model(**batch(mpnet_tokenizer, [query])).scores for query in QUERIES])
    assert torch.allclose(padded, alone, atol=1e-5)


def test_int8_keeps_mpnet_residual_projections_in_float(make_mpnet_model, mpnet_tokenizer):
    model = make_mpnet_model(num_hidden_layers=1).eval()
    with torch.no_grad():
        expected = model(**batch(mpnet_tokenizer)).scores
    quantized = quantize_linear_layers(model)
    modules = dict(quantized.encoder.named_modules())

    def is_int8(name):
        return type(modules[name]).__module__.startswith("torch.ao.nn.quantized.dynamic")

    assert not is_int8("encoder.layer.0.attention.attn.o") and not is_int8("encoder.layer.0.output.dense")
    assert is_int8("encoder.layer.0.attention.attn.q") and is_int8("encoder.layer.0.intermediate.dense")
    with torch.no_grad():
        assert torch.allclose(quantized(**batch(mpnet_tokenizer)).scores, expected, atol=0.05)


def test_an_mpnet_reward_model_loads_without_qrm_hf_and_in_the_scorer(make_mpnet_model, mpnet_tokenizer, tmp_path):
    model = make_mpnet_model(num_hidden_layers=1, pooling="mean", loss="bce").eval()
    folder = save_reward_model(model, mpnet_tokenizer, tmp_path / "saved")
    with torch.no_grad():
        expected = model(**batch(mpnet_tokenizer)).scores.tolist()
    output = load_without_qrm_hf(folder, QUERIES, tmp_path)
    assert output["class"] == "QueryRewardModel"
    assert output["scores"] == pytest.approx(expected, abs=1e-5)
    assert output["pipeline"] == pytest.approx(expected, abs=1e-5)
    assert QueryScorer.from_pretrained(folder, device="cpu").score(QUERIES) == pytest.approx(expected, abs=1e-4)
    assert type(AutoModel.from_pretrained(folder, trust_remote_code=True).encoder).__name__ == "MPNetModel"


def test_max_length_is_checked_against_mpnet_positions(tiny_mpnet_config, mpnet_path):
    """MPNet's 514 position embeddings read 512 tokens: its positions start after the padding id."""
    real = json.loads((mpnet_path / "config.json").read_text())
    assert encoder_positions(real) == encoder_positions(tiny_mpnet_config.to_dict()) == 512
    check_max_length(512, real, "all-mpnet-base-v2")
    with pytest.raises(EncoderError, match=r"max_length 513 exceeds what --model all-mpnet-base-v2 can read \(512"):
        check_max_length(513, real, "all-mpnet-base-v2")
