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
