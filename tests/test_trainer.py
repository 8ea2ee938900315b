import pytest
from transformers import TrainerControl, TrainerState

from qrm_hf import QRMTrainer, QRMTrainingArguments
from qrm_hf.training.trainer import PerTrialEarlyStopping, best_epoch, best_validation_mse


def optimizer_groups(model, tmp_path, **arguments):
    args = QRMTrainingArguments(output_dir=str(tmp_path), report_to="none", **arguments)
    trainer = QRMTrainer(model=model, args=args)
    return {group["name"]: group for group in trainer.create_optimizer().param_groups}, model


def test_head_trains_at_its_own_learning_rate(make_tiny_model, tmp_path):
    groups, _ = optimizer_groups(
        make_tiny_model(num_hidden_layers=2), tmp_path, learning_rate=2e-5, head_lr_multiplier=11.0, weight_decay=0.05
    )
    assert groups["encoder"]["lr"] == pytest.approx(2e-5)
    assert groups["encoder_no_decay"]["lr"] == pytest.approx(2e-5)
    assert groups["head"]["lr"] == pytest.approx(2.2e-4)
    assert groups["head_no_decay"]["lr"] == pytest.approx(2.2e-4)
    assert groups["encoder"]["weight_decay"] == groups["head"]["weight_decay"] == 0.05
    assert groups["encoder_no_decay"]["weight_decay"] == groups["head_no_decay"]["weight_decay"] == 0.0


def test_biases_and_norms_skip_weight_decay_and_every_parameter_is_optimized(make_tiny_model, tmp_path):
    groups, model = optimizer_groups(
        make_tiny_model(num_hidden_layers=2, use_layer_norm=True), tmp_path, weight_decay=0.1
    )
    names = {id(p): n for n, p in model.named_parameters()}
    grouped = {name: [names[id(p)] for p in group["params"]] for name, group in groups.items()}
    assert all(n.startswith("head.") for n in grouped["head"] + grouped["head_no_decay"])
    assert not any(n.startswith("head.") for n in grouped["encoder"] + grouped["encoder_no_decay"])
    # Head: Linear biases and LayerNorm weights/biases are not decayed; Linear weights are.
    assert set(grouped["head"]) == {"head.layers.1.weight", "head.layers.5.weight", "head.layers.9.weight"}
    assert "head.layers.2.weight" in grouped["head_no_decay"]  # LayerNorm
    assert all(("bias" in n or "norm" in n) for n in grouped["encoder_no_decay"])
    assert sorted(sum(grouped.values(), [])) == sorted(names.values())


def test_layer_wise_decay_lowers_the_learning_rate_layer_by_layer(make_tiny_model, tmp_path):
    """The tiny ModernBERT has 2 layers: the top one at the learning rate, the one below at 0.5x, the
    embeddings at 0.25x; the head keeps its own multiplier, and every parameter is still optimized once."""
    model = make_tiny_model(num_hidden_layers=1)
    groups, _ = optimizer_groups(model, tmp_path, learning_rate=1e-4, head_lr_multiplier=10.0, layer_lr_decay=0.5)
    lr_of = {}
    names = {id(p): n for n, p in model.named_parameters()}
    for group in groups.values():
        for parameter in group["params"]:
            lr_of[names[id(parameter)]] = group["lr"]
    assert lr_of["encoder.layers.1.attn.Wqkv.weight"] == pytest.approx(1e-4)
    assert lr_of["encoder.final_norm.weight"] == pytest.approx(1e-4)
    assert lr_of["encoder.layers.0.attn.Wqkv.weight"] == pytest.approx(5e-5)
    assert lr_of["encoder.embeddings.tok_embeddings.weight"] == pytest.approx(2.5e-5)
    assert all(lr == pytest.approx(1e-3) for name, lr in lr_of.items() if name.startswith("head."))
    assert sorted(lr_of) == sorted(names.values())
    with pytest.raises(ValueError, match=r"layer_lr_decay must be in \(0, 1\], got 1.5"):
        QRMTrainingArguments(output_dir=str(tmp_path), layer_lr_decay=1.5)


def test_adam_settings_stay_stock(make_tiny_model, tmp_path):
    groups, _ = optimizer_groups(make_tiny_model(), tmp_path, adam_beta1=0.85, adam_beta2=0.99)
    assert groups["head"]["betas"] == (0.85, 0.99)


def test_objective_is_the_best_epoch_not_the_last():
    history = [
        {"loss": 0.3, "epoch": 1},
        {"eval_mse": 0.09, "epoch": 1},
        {"eval_mse": 0.07, "epoch": 2},
        {"eval_mse": 0.08, "epoch": 3},
    ]
    assert best_validation_mse(history) == 0.07
    assert best_epoch(history) == 2


def test_early_stopping_patience_starts_afresh_each_training_run(tmp_path):
    args = QRMTrainingArguments(
        output_dir=str(tmp_path), metric_for_best_model="mse", greater_is_better=False, eval_strategy="epoch"
    )
    callback = PerTrialEarlyStopping(early_stopping_patience=2)
    state, control = TrainerState(), TrainerControl()
    state.best_metric = 0.05
    callback.on_evaluate(args, state, control, metrics={"eval_mse": 0.06})
    assert callback.early_stopping_patience_counter == 1
    callback.on_train_begin(args, TrainerState(), control)
    assert callback.early_stopping_patience_counter == 0
