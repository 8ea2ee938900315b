import pytest

from qrm_hf import QueryRewardConfig


def test_head_widths_follow_encoder_hidden_size(tiny_encoder_config):
    config = QueryRewardConfig(encoder=tiny_encoder_config, num_hidden_layers=3, hidden_dim_ratio=0.5)
    assert config.head_widths() == [16, 8, 4]


def test_regression_settings_for_transformers_tooling(tiny_encoder_config):
    config = QueryRewardConfig(encoder=tiny_encoder_config)
    assert config.num_labels == 1
    assert config.problem_type == "regression"
    assert config.auto_map["AutoModel"] == "modeling_qrm.QueryRewardModel"
    assert config.auto_map["AutoModelForSequenceClassification"] == "modeling_qrm.QueryRewardModel"


def test_encoder_config_is_stored_inside(tmp_path, tiny_encoder_config):
    QueryRewardConfig(encoder=tiny_encoder_config, activation="tanh", pooling="mean").save_pretrained(tmp_path)
    reloaded = QueryRewardConfig.from_pretrained(tmp_path)
    assert reloaded.encoder.model_type == "modernbert"
    assert reloaded.encoder.hidden_size == 32
    assert (reloaded.activation, reloaded.pooling) == ("tanh", "mean")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"activation": "swish"}, "activation must be one of"),
        ({"pooling": "max"}, "pooling must be one of"),
        ({"dropout": 1.0}, "dropout must be in"),
        ({"hidden_dim_ratio": 0.01, "num_hidden_layers": 1}, "empty layer"),
    ],
)
def test_invalid_head_is_refused(tiny_encoder_config, kwargs, message):
    with pytest.raises(ValueError, match=message):
        QueryRewardConfig(encoder=tiny_encoder_config, **kwargs)


def test_encoder_dropout_reaches_every_dropout_field_of_bert_and_modernbert(minilm_path, tiny_encoder_config):
    from transformers import AutoConfig

    minilm = QueryRewardConfig(encoder=AutoConfig.from_pretrained(minilm_path), encoder_dropout=0.0)
    assert minilm.encoder.hidden_dropout_prob == 0.0 and minilm.encoder.attention_probs_dropout_prob == 0.0
    modernbert = QueryRewardConfig(encoder=tiny_encoder_config.to_dict(), encoder_dropout=0.25)
    fields = ("attention_dropout", "embedding_dropout", "mlp_dropout")
    assert all(getattr(modernbert.encoder, name) == 0.25 for name in fields)
    default = QueryRewardConfig(encoder=AutoConfig.from_pretrained(minilm_path))
    assert default.encoder_dropout == 0.0 and default.encoder.hidden_dropout_prob == 0.0  # measured: benchmark 8
    untouched = QueryRewardConfig(encoder=AutoConfig.from_pretrained(minilm_path), encoder_dropout=None)
    assert untouched.encoder.hidden_dropout_prob == 0.1 and untouched.encoder.attention_probs_dropout_prob == 0.1


def test_encoder_dropout_is_saved_with_the_config(tmp_path, tiny_encoder_config):
    QueryRewardConfig(encoder=tiny_encoder_config, encoder_dropout=0.0, loss="bce").save_pretrained(tmp_path)
    reloaded = QueryRewardConfig.from_pretrained(tmp_path)
    assert (reloaded.encoder_dropout, reloaded.loss, reloaded.encoder.attention_dropout) == (0.0, "bce", 0.0)
    assert reloaded.decision_threshold == 0.8  # the paper's, until a run chooses one on dev


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"loss": "hinge"}, r"loss must be one of \('mse', 'bce'\)"),
        ({"encoder_dropout": 1.0}, r"encoder_dropout must be in \[0, 1\)"),
        ({"decision_threshold": 1.5}, r"decision_threshold must be in \[0, 1\]"),
    ],
)
def test_invalid_loss_threshold_and_encoder_dropout_are_refused(tiny_encoder_config, kwargs, message):
    with pytest.raises(ValueError, match=message):
        QueryRewardConfig(encoder=tiny_encoder_config, **kwargs)
