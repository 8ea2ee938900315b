"""Model soups: the average of fine-tunes' weights, and the greedy recipe that keeps only what helps on dev."""

import pytest
import torch

from qrm_hf.training.soup import Ingredient, average_weights, greedy_ensemble, greedy_soup, soup_key


def test_a_soup_of_two_models_is_the_mean_of_their_weights(make_tiny_model):
    first, second = make_tiny_model(seed=0, num_hidden_layers=1), make_tiny_model(seed=1, num_hidden_layers=1)
    souped = average_weights([first.state_dict(), second.state_dict()])
    for name, tensor in first.state_dict().items():
        if tensor.is_floating_point():
            assert torch.allclose(souped[name], (tensor + second.state_dict()[name]) / 2)
        else:
            assert torch.equal(souped[name], tensor)
    assert any(not torch.equal(souped[name], first.state_dict()[name]) for name in souped)
    # The average loads back into the architecture and scores.
    first.load_state_dict(souped)
    assert first(input_ids=torch.tensor([[1, 5, 7, 2]])).scores.shape == (1,)


def test_weights_of_another_shape_are_refused_by_name(make_tiny_model):
    linear, mlp = make_tiny_model(num_hidden_layers=0), make_tiny_model(num_hidden_layers=1)
    with pytest.raises(ValueError, match="ingredient 1 has other weights"):
        average_weights([linear.state_dict(), mlp.state_dict()])
    wide = {"head.weight": torch.zeros(2, 3)}
    with pytest.raises(ValueError, match=r"head.weight has shape \(3, 3\), not \(2, 3\)"):
        average_weights([wide, {"head.weight": torch.zeros(3, 3)}])
    with pytest.raises(ValueError, match="at least one ingredient"):
        average_weights([])


def test_greedy_soup_adds_only_what_lowers_dev_mse():
    """Dev MSE here is the squared distance of the single weight to 1.0: averaging 0.8 with 1.2 helps, 3.0 hurts."""

    def dev_mse_of(weights):
        return float((weights["w"] - 1.0) ** 2)

    def ingredient(label, value):
        return Ingredient(label, {"w": torch.tensor(value)}, dev_mse_of({"w": torch.tensor(value)}))

    soup = greedy_soup([ingredient("far", 3.0), ingredient("high", 1.2), ingredient("low", 0.8)], dev_mse_of)
    assert soup.labels in (("low", "high"), ("high", "low"))  # best first; "far" would raise the dev MSE
    assert soup.weights["w"].item() == pytest.approx(1.0)
    assert soup.dev_mse == pytest.approx(0.0)
    alone = greedy_soup([ingredient("high", 1.2), ingredient("far", 3.0)], dev_mse_of)
    assert alone.labels == ("high",) and alone.dev_mse == pytest.approx(0.04)


def test_greedy_ensemble_keeps_members_whose_mean_prediction_lowers_dev_mse():
    """Truth is 0.5 everywhere: errors of opposite sign cancel in the mean, an error of the same sign does not."""
    true = [0.5, 0.5]
    predictions = {"low": [0.4, 0.4], "high": [0.6, 0.6], "lower": [0.3, 0.35]}

    def ingredient(label):
        return Ingredient(label, {}, sum((p - t) ** 2 for p, t in zip(predictions[label], true, strict=True)) / 2)

    labels, dev_mse = greedy_ensemble([ingredient(name) for name in ("lower", "high", "low")], predictions, true)

    assert labels in (("low", "high"), ("high", "low"))
    assert dev_mse == pytest.approx(0.0)
    alone, mse = greedy_ensemble([ingredient("low"), ingredient("lower")], predictions, true)
    assert alone == ("low",) and mse == pytest.approx(0.01)


def test_configurations_differing_only_in_dropout_share_a_soup():
    linear = {"num_hidden_layers": 0, "loss": "mse", "dropout": 0.1, "encoder_dropout": 0.0}
    assert soup_key(linear, 64) == soup_key({**linear, "dropout": 0.25, "encoder_dropout": 0.1}, 64)
    assert soup_key(linear, 64) != soup_key({**linear, "loss": "bce"}, 64)
    assert soup_key(linear, 64) != soup_key({**linear, "num_hidden_layers": 1}, 64)
    assert soup_key(linear, 64) != soup_key(linear, 128)
