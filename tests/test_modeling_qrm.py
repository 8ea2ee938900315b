import pytest
import torch
from conftest import load_without_qrm_hf
from torch import nn

from qrm_hf import QueryRewardEnsemble, QueryRewardModel, QueryScorer
from qrm_hf.modeling.model_files import save_reward_model


def batch(tokenizer, queries=("how do owls hunt ?", "owls hunt", "which form of government is in greece ?")):
    return tokenizer(list(queries), padding=True, return_tensors="pt", return_token_type_ids=False)


@pytest.mark.parametrize("activation", ["relu", "gelu", "tanh", "leaky_relu"])
@pytest.mark.parametrize("use_layer_norm", [True, False])
@pytest.mark.parametrize("num_hidden_layers", [1, 2, 3])
def test_head_layout(make_tiny_model, activation, use_layer_norm, num_hidden_layers):
    model = make_tiny_model(activation=activation, use_layer_norm=use_layer_norm, num_hidden_layers=num_hidden_layers)
    linears = [layer for layer in model.head.layers if isinstance(layer, nn.Linear)]
    widths = [32 * 0.5 * 0.5**i for i in range(num_hidden_layers)]
    assert [layer.out_features for layer in linears] == [int(w) for w in widths] + [1]
    assert linears[0].in_features == 32
    assert sum(isinstance(layer, nn.LayerNorm) for layer in model.head.layers) == (
        num_hidden_layers if use_layer_norm else 0
    )
    assert isinstance(model.head.layers[0], nn.Dropout)


def test_forward_returns_scores_logits_and_mse_loss(make_tiny_model, tokenizer):
    model = make_tiny_model().eval()
    labels = torch.tensor([1.0, 0.0, 0.8])
    output = model(**batch(tokenizer), labels=labels)
    assert output.logits.shape == (3, 1)
    assert output.scores.shape == (3,)
    assert torch.allclose(output.loss, ((output.scores - labels) ** 2).mean())


def test_dropout_is_off_in_eval_mode(make_tiny_model, tokenizer):
    model = make_tiny_model(dropout=0.5).eval()
    inputs = batch(tokenizer)
    assert torch.equal(model(**inputs).scores, model(**inputs).scores)
    model.train()
    assert not torch.equal(model(**inputs).scores, model(**inputs).scores)


@pytest.mark.parametrize("pooling", ["cls", "mean"])
def test_padding_does_not_change_a_score(make_tiny_model, tokenizer, pooling):
    model = make_tiny_model(pooling=pooling).eval()
    alone = model(**batch(tokenizer, ["owls hunt"])).scores
    padded = model(**batch(tokenizer, ["owls hunt", "a much longer query about how owls hunt at night ?"])).scores
    assert torch.allclose(alone[0], padded[0], atol=1e-5)


def test_mean_and_cls_pooling_differ(make_tiny_model, tokenizer):
    inputs = batch(tokenizer)
    cls = make_tiny_model(pooling="cls").eval()(**inputs).scores
    mean = make_tiny_model(pooling="mean").eval()(**inputs).scores
    assert not torch.allclose(cls, mean)


def test_from_encoder_copies_pretrained_weights(minilm_path):
    from transformers import AutoModel

    encoder = AutoModel.from_pretrained(minilm_path)
    model = QueryRewardModel.from_encoder(encoder, num_hidden_layers=2)
    assert model.config.encoder.hidden_size == 384
    assert model.head.layers[1].in_features == 384
    for name, tensor in encoder.state_dict().items():
        assert torch.equal(model.encoder.state_dict()[name], tensor), name


def test_save_and_reload_give_identical_scores(make_tiny_model, tokenizer, tmp_path):
    model = make_tiny_model(num_hidden_layers=2, activation="tanh", pooling="mean").eval()
    folder = save_reward_model(model, tokenizer, tmp_path / "saved")
    assert {"config.json", "model.safetensors", "tokenizer.json", "modeling_qrm.py", "configuration_qrm.py"} <= {
        path.name for path in folder.iterdir()
    }
    reloaded = QueryRewardModel.from_pretrained(folder).eval()
    inputs = batch(tokenizer)
    assert torch.equal(model(**inputs).scores, reloaded(**inputs).scores)
    assert reloaded.config.pooling == "mean"


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_auto_model_loads_without_qrm_hf_installed(make_tiny_model, tokenizer, tmp_path, loss):
    """The saved folder carries its own code: a process that cannot import qrm_hf still loads and scores, with
    the loss it was trained with (a bce model's scores are sigmoids, also through the pipeline)."""
    model = make_tiny_model(num_hidden_layers=2, loss=loss).eval()
    if loss == "bce":
        with torch.no_grad():
            model.head.layers[-1].bias.fill_(-3.0)
    folder = save_reward_model(model, tokenizer, tmp_path / "saved")
    queries = ["how do owls hunt ?", "owls hunt", "which form of government is in greece ?"]
    expected = model(**batch(tokenizer, queries)).scores.tolist()
    output = load_without_qrm_hf(folder, queries, tmp_path)
    assert output["class"] == "QueryRewardModel"
    assert output["loss"] == loss
    assert output["scores"] == pytest.approx(expected, abs=1e-5)
    assert output["pipeline"] == pytest.approx(expected, abs=1e-5)
    if loss == "bce":
        assert all(0.0 < score < 0.1 for score in output["scores"])  # sigmoid of about -3, not the raw -3


def test_bce_model_scores_lie_in_the_unit_interval_and_train_on_soft_labels(make_tiny_model, tokenizer):
    model = make_tiny_model(loss="bce").eval()
    with torch.no_grad():  # push the head's raw output far outside [0, 1]
        model.head.layers[-1].bias.fill_(25.0)
    labels = torch.tensor([1.0, 0.0, 0.6])
    output = model(**batch(tokenizer), labels=labels)
    assert torch.all((output.scores >= 0) & (output.scores <= 1))
    assert torch.equal(output.logits.squeeze(-1), output.scores)  # pipelines with function_to_apply="none" see scores
    with torch.no_grad():  # unsaturated, so the raw output can be read back from the score
        model.head.layers[-1].bias.fill_(1.5)
    output = model(**batch(tokenizer), labels=labels)
    raw = torch.logit(output.scores.double())
    expected = nn.functional.binary_cross_entropy_with_logits(raw, labels.double())
    assert output.loss.item() == pytest.approx(expected.item(), rel=1e-3)


def test_encoder_dropout_zero_makes_training_mode_deterministic_in_the_encoder(make_tiny_model, tokenizer):
    model = make_tiny_model(encoder_dropout=0.0, dropout=0.0).train()
    inputs = batch(tokenizer)
    assert torch.equal(model(**inputs).scores, model(**inputs).scores)
    noisy = make_tiny_model(encoder_dropout=0.5, dropout=0.0).train()
    assert not torch.equal(noisy(**inputs).scores, noisy(**inputs).scores)


@pytest.mark.parametrize("loss", ["mse", "bce"])
def test_saved_loss_threshold_and_encoder_dropout_survive_a_reload(make_tiny_model, tokenizer, tmp_path, loss):
    model = make_tiny_model(loss=loss, encoder_dropout=0.0, num_hidden_layers=0).eval()
    model.config.decision_threshold = 0.65
    folder = save_reward_model(model, tokenizer, tmp_path / "saved")
    reloaded = QueryRewardModel.from_pretrained(folder).eval()
    assert (reloaded.config.loss, reloaded.config.decision_threshold) == (loss, 0.65)
    assert reloaded.config.encoder_dropout == 0.0
    assert reloaded.config.encoder.mlp_dropout == 0.0
    inputs = batch(tokenizer)
    assert torch.allclose(model(**inputs).scores, reloaded(**inputs).scores, atol=1e-6)


# Ensembles


def test_an_ensemble_scores_its_members_mean_with_their_spread(make_tiny_model, tokenizer):
    members = [make_tiny_model(seed=seed, pooling="mean").eval() for seed in (0, 1, 2)]
    ensemble = QueryRewardEnsemble.from_members(members).eval()
    inputs = batch(tokenizer)

    with torch.no_grad():
        output = ensemble(**inputs, labels=torch.tensor([1.0, 0.2, 0.8]))
        each = torch.stack([member(**inputs).scores for member in members])

    assert ensemble.config.ensemble_size == 3
    assert torch.allclose(output.scores, each.mean(dim=0), atol=1e-6)
    assert torch.allclose(output.spread, each.std(dim=0, correction=0), atol=1e-6)
    assert output.logits.shape == (3, 1)
    assert output.loss == pytest.approx(torch.mean((each.mean(dim=0) - torch.tensor([1.0, 0.2, 0.8])) ** 2).item())
    assert members[0](**inputs).spread is None


def test_an_ensemble_refuses_members_of_another_architecture(make_tiny_model):
    with pytest.raises(ValueError, match="member 1 has another architecture"):
        QueryRewardEnsemble.from_members([make_tiny_model(), make_tiny_model(num_hidden_layers=2)])
    with pytest.raises(ValueError, match="at least 2 members"):
        QueryRewardEnsemble.from_members([make_tiny_model()])


def test_an_ensemble_reloads_and_loads_without_qrm_hf(make_tiny_model, tokenizer, tmp_path):
    """One folder: QueryScorer picks the ensemble class from its config, and a process without qrm_hf gets the
    same scores through AutoModel and the text-classification pipeline."""
    members = [make_tiny_model(seed=seed, loss="bce").eval() for seed in (0, 1)]
    ensemble = QueryRewardEnsemble.from_members(members).eval()
    folder = save_reward_model(ensemble, tokenizer, tmp_path / "saved")
    queries = ["how do owls hunt ?", "owls hunt", "which form of government is in greece ?"]
    expected = ensemble(**batch(tokenizer, queries)).scores.tolist()

    scorer = QueryScorer.from_pretrained(folder, device="cpu")
    output = load_without_qrm_hf(folder, queries, tmp_path)

    assert type(scorer.model).__name__ == "QueryRewardEnsemble"
    assert scorer.score(queries, raw=True) == pytest.approx(expected, abs=1e-5)
    assert output["class"] == "QueryRewardEnsemble"
    assert output["scores"] == pytest.approx(expected, abs=1e-5)
    assert output["pipeline"] == pytest.approx(expected, abs=1e-5)
    int8 = QueryScorer.from_pretrained(folder, backend="int8")
    assert int8.score(queries) == pytest.approx(expected, abs=0.05)
