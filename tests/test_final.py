"""The final stage: all of train, best dev epoch kept, threshold chosen on dev only, calibration measured."""

import pytest
from conftest import load_without_qrm_hf
from datasets import DatasetDict
from transformers import AutoModel, AutoTokenizer

from qrm_hf.data import load_splits, tokenize_splits
from qrm_hf.metrics import choose_threshold
from qrm_hf.modeling.model_files import save_reward_model
from qrm_hf.run.config import RunConfig
from qrm_hf.scoring.scorer import QueryScorer
from qrm_hf.search.space import SearchSpace
from qrm_hf.training.final import Candidate, TrainingDiverged, fit_candidate, soup_candidates, train_final

VALUES = {
    "num_hidden_layers": 0,
    "encoder_dropout": 0.0,
    "learning_rate": 1e-3,
    "head_lr_multiplier": 5.0,
    "batch_size": 16,
    "max_length": 16,
    "num_epochs": 2,
}


@pytest.fixture(scope="module")
def prepared(data_dir, tiny_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    splits = load_splits(str(data_dir), max_train_samples=96, max_eval_samples=64, max_test_samples=64)
    return tokenizer, tokenize_splits(splits, tokenizer, 16), AutoModel.from_pretrained(tiny_encoder_dir)


def final(prepared, tmp_path, tiny_encoder_dir, tokenized=None):
    tokenizer, default, encoder = prepared
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), training={"disable_tqdm": True})
    space = SearchSpace(parameters=(), fixed=dict(VALUES))
    return config, train_final(config, space.fixed, {}, tokenized or default, tokenizer, encoder)


def test_threshold_comes_from_dev_and_never_from_test(prepared, tmp_path, tiny_encoder_dir):
    config, result = final(prepared, tmp_path / "a", tiny_encoder_dir)
    assert result.decision_threshold == choose_threshold(result.dev.predicted, result.dev.true)
    assert result.model.config.decision_threshold == result.decision_threshold
    assert result.test_metrics["decision_threshold"] == result.decision_threshold
    # Every test label turned upside down: the same model, the same threshold.
    tokenizer, tokenized, _ = prepared
    flipped = tokenized["test"].map(lambda row: {"labels": 1.0 - row["labels"]})
    _, again = final(prepared, tmp_path / "b", tiny_encoder_dir, DatasetDict({**tokenized, "test": flipped}))
    assert again.decision_threshold == result.decision_threshold
    assert again.test_metrics["mse"] != pytest.approx(result.test_metrics["mse"])
    # The checkpoints that reloaded the best epoch are gone; nothing else was written.
    assert not (config.run_dir / "final_checkpoints").exists()


def test_best_dev_epoch_is_kept_and_calibration_is_measured(prepared, tmp_path, tiny_encoder_dir):
    _, result = final(prepared, tmp_path, tiny_encoder_dir)
    assert result.best_epoch in (1.0, 2.0)
    assert result.dev_metrics["mse"] == pytest.approx(
        float(((result.dev.predicted - result.dev.true) ** 2).mean()), rel=1e-6
    )
    assert result.test.offset == pytest.approx(float(result.test.predicted.mean() - result.test.true.mean()))
    assert result.offset_flagged == (abs(result.train_offset) > 0.02)
    assert {"accuracy_at_threshold", "f1_at_threshold", "mean_prediction", "mean_reference"} <= set(result.test_metrics)


def test_final_stage_lays_its_schedule_over_final_max_epochs_and_stops_early(prepared, tmp_path, tiny_encoder_dir):
    """With a learning rate of 0 dev never improves: patience 2 stops the run after epoch 3 of the 6 it may
    train, the first epoch is kept, and the schedule was laid out for all 6 (not cut to the trial's 2)."""
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path), final_max_epochs=6, training={"disable_tqdm": True}
    )
    space = SearchSpace(parameters=(), fixed={**VALUES, "learning_rate": 0.0})
    trainer = fit_candidate(config, space.fixed, {}, tokenized, tokenizer, encoder)
    steps_per_epoch = -(-len(tokenized["train"]) // VALUES["batch_size"])
    assert trainer.args.num_train_epochs == 6
    assert trainer.state.max_steps == 6 * steps_per_epoch
    assert trainer.state.epoch == pytest.approx(3.0)
    assert trainer.state.best_model_checkpoint is not None and trainer.state.best_global_step == steps_per_epoch


def test_final_stage_keeps_the_best_dev_epoch_of_a_longer_run(prepared, tmp_path, tiny_encoder_dir):
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path), final_max_epochs=4, training={"disable_tqdm": True}
    )
    trainer = fit_candidate(config, dict(VALUES), {}, tokenized, tokenizer, encoder)
    logged = [entry["eval_mse"] for entry in trainer.state.log_history if "eval_mse" in entry]
    assert 2 <= len(logged) <= 4
    kept = trainer.evaluate(tokenized["dev"])["eval_mse"]
    assert kept == pytest.approx(min(logged), rel=1e-5)


def test_a_soup_of_two_candidates_is_never_worse_on_dev_and_reloads_without_qrm_hf(
    prepared, tmp_path, tiny_encoder_dir
):
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), training={"disable_tqdm": True})
    space = SearchSpace(parameters=(), fixed=dict(VALUES))
    candidates = [
        Candidate({"learning_rate": 1e-3}, trial=3, search_value=0.05),
        Candidate({"learning_rate": 5e-4, "dropout": 0.2}, trial=7, search_value=0.06),
    ]
    result = train_final(config, space.fixed, candidates, tokenized, tokenizer, encoder)
    records = {record.label: record for record in result.candidates}
    assert set(records) == {"trial 3", "trial 7"}
    assert records["trial 7"].search_value == 0.06
    assert set(result.combined) <= set(records) and result.combined
    assert result.dev_metrics["mse"] <= min(record.dev_mse for record in records.values()) + 1e-7
    assert result.best_epoch == records[result.combined[0]].best_epoch
    folder = save_reward_model(result.model, tokenizer, tmp_path / "soup")
    queries = ["how do owls hunt ?", "owls hunt"]
    result.model.eval()
    expected = result.model(**tokenizer(queries, padding=True, return_tensors="pt", return_token_type_ids=False))
    reloaded = load_without_qrm_hf(folder, queries, tmp_path)
    assert reloaded["class"] == "QueryRewardModel"
    assert reloaded["scores"] == pytest.approx(expected.scores.tolist(), abs=1e-5)


def test_an_ensemble_of_candidates_is_never_worse_on_dev_and_scores_alike_everywhere(
    prepared, tmp_path, tiny_encoder_dir
):
    """combine: ensemble keeps the members whose mean dev prediction helps; what ships is one folder that
    QueryScorer and a process without qrm_hf both score as the final stage did."""
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path), combine="ensemble", training={"disable_tqdm": True}
    )
    space = SearchSpace(parameters=(), fixed=dict(VALUES))
    candidates = [
        Candidate({"learning_rate": 1e-3}, trial=3, search_value=0.05),
        Candidate({"learning_rate": 5e-4, "dropout": 0.2}, trial=7, search_value=0.06),
        Candidate({"learning_rate": 2e-3, "head_lr_multiplier": 1.0}, trial=9, search_value=0.07),
    ]
    result = train_final(config, space.fixed, candidates, tokenized, tokenizer, encoder)
    records = {record.label: record for record in result.candidates}
    assert result.dev_metrics["mse"] <= min(record.dev_mse for record in records.values()) + 1e-7
    assert result.combined and set(result.combined) <= set(records)
    size = len(result.combined)
    assert type(result.model).__name__ == ("QueryRewardEnsemble" if size > 1 else "QueryRewardModel")
    assert result.model.config.ensemble_size == size
    folder = save_reward_model(result.model, tokenizer, tmp_path / "ensemble")
    queries = ["how do owls hunt ?", "owls hunt"]
    result.model.eval()
    expected = result.model(**tokenizer(queries, padding=True, return_tensors="pt", return_token_type_ids=False))
    assert load_without_qrm_hf(folder, queries, tmp_path)["scores"] == pytest.approx(expected.scores.tolist(), abs=1e-5)
    scorer = QueryScorer.from_pretrained(folder, device="cpu")
    assert scorer.score(queries, raw=True) == pytest.approx(expected.scores.tolist(), abs=1e-5)
    assert scorer.decision_threshold == result.decision_threshold


class StoredTrial:
    def __init__(self, number, value, **params):
        self.number, self.value, self.params = number, value, params


def test_soup_candidates_are_the_best_trials_of_the_best_ones_architecture():
    space = SearchSpace(parameters=(), fixed={"num_hidden_layers": 0, "max_length": 64})
    trials = [
        StoredTrial(0, 0.09, loss="mse", dropout=0.1),
        StoredTrial(1, 0.07, loss="bce", dropout=0.1),
        StoredTrial(2, 0.08, loss="mse", dropout=0.2),
        StoredTrial(3, 0.075, loss="bce", dropout=0.3),
        StoredTrial(4, 0.071, loss="bce", dropout=0.0, num_hidden_layers=1),
        StoredTrial(5, None, loss="bce", dropout=0.0),
    ]
    chosen = soup_candidates(trials, space.fixed, size=3)
    assert [candidate.trial for candidate in chosen] == [1, 3]
    assert chosen[0].search_value == 0.07 and chosen[0].params == {"loss": "bce", "dropout": 0.1}
    assert [candidate.trial for candidate in soup_candidates(trials, space.fixed, size=1)] == [1]
    assert soup_candidates([], space.fixed, size=3) == []


def test_a_refit_follows_the_chosen_schedule_and_stops_at_the_chosen_epoch(prepared, tmp_path, tiny_encoder_dir):
    """A refit on train and dev: its schedule is laid out over final_max_epochs, as the run chosen on dev had,
    and it stops after that run's best epoch; nothing is evaluated and no checkpoint is left behind."""
    from datasets import concatenate_datasets

    from qrm_hf.training.final import refit_candidate

    tokenizer, tokenized, encoder = prepared
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path), final_max_epochs=3, training={"disable_tqdm": True}
    )
    rows = concatenate_datasets([tokenized["train"], tokenized["dev"]])
    trainer = refit_candidate(config, dict(VALUES), {}, rows, tokenizer, encoder, 2)
    steps_per_epoch = -(-len(rows) // VALUES["batch_size"])
    assert trainer.state.max_steps == 3 * steps_per_epoch
    assert trainer.state.global_step == 2 * steps_per_epoch
    assert not [entry for entry in trainer.state.log_history if "eval_mse" in entry]
    assert not (config.run_dir / "final_checkpoints").exists()


@pytest.mark.parametrize("combine", ["soup", "ensemble"])
def test_refit_on_dev_keeps_what_dev_chose_and_ships_weights_that_saw_dev(
    prepared, tmp_path, tiny_encoder_dir, combine
):
    """With refit_on_dev the members, their epochs and the threshold are those chosen on dev without it; the
    shipped weights are new (trained on train and dev) and combined the same way."""
    tokenizer, tokenized, encoder = prepared
    space = SearchSpace(parameters=(), fixed=dict(VALUES))
    candidates = [
        Candidate({"learning_rate": 1e-3}, trial=3, search_value=0.05),
        Candidate({"learning_rate": 5e-4, "dropout": 0.2}, trial=7, search_value=0.06),
    ]
    results = {}
    for refit in (False, True):
        config = RunConfig(
            model=str(tiny_encoder_dir),
            output_dir=str(tmp_path / str(refit)),
            combine=combine,
            refit_on_dev=refit,
            training={"disable_tqdm": True},
        )
        results[refit] = train_final(config, space.fixed, candidates, tokenized, tokenizer, encoder)
    chosen, refit = results[False], results[True]
    assert chosen.refit_rows is None
    assert refit.refit_rows == len(tokenized["train"]) + len(tokenized["dev"])
    assert refit.combined == chosen.combined
    assert refit.decision_threshold == chosen.decision_threshold
    assert refit.model.config.decision_threshold == chosen.decision_threshold
    assert refit.dev_metrics["mse"] == pytest.approx(chosen.dev_metrics["mse"], rel=1e-6)
    assert type(refit.model) is type(chosen.model)
    assert refit.model.config.ensemble_size == chosen.model.config.ensemble_size
    assert refit.test_metrics["mse"] != pytest.approx(chosen.test_metrics["mse"], rel=1e-6)
    folder = save_reward_model(refit.model, tokenizer, tmp_path / "refit")
    scorer = QueryScorer.from_pretrained(folder, device="cpu")
    assert scorer.score(["how do owls hunt ?"], raw=True) == pytest.approx(
        QueryScorer(refit.model, tokenizer).score(["how do owls hunt ?"], raw=True), abs=1e-5
    )


def test_undefined_test_metrics_are_json_null_with_their_reason(tmp_path):
    import json
    import math

    from qrm_hf.run.folder import write_test_metrics

    path = tmp_path / "test_metrics.json"
    write_test_metrics({"mse": 0.07, "pearson": math.nan, "f1": math.inf, "n": 2}, path)

    def refuse(constant):
        raise ValueError(constant)

    written = json.loads(path.read_text(), parse_constant=refuse)
    assert written["mse"] == 0.07 and written["pearson"] is None and written["f1"] is None and written["n"] == 2
    assert set(written["undefined"]) == {"pearson", "f1"} and "constant labels" in written["undefined"]["pearson"]


def test_a_candidate_that_diverges_is_left_out_and_all_diverging_is_one_clear_error(
    prepared, tmp_path, tiny_encoder_dir, caplog
):
    """A learning rate of 1e300 turns the model's scores into NaN. Among several candidates that one is left out
    (a warning names it) and the others make the model; when every candidate diverges, TrainingDiverged says so and
    no model comes back."""
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), training={"disable_tqdm": True})
    space = SearchSpace(parameters=(), fixed=dict(VALUES, num_epochs=1))
    candidates = [Candidate({"learning_rate": 1e300}, trial=1), Candidate({"learning_rate": 1e-3}, trial=2)]
    with caplog.at_level("WARNING", logger="qrm_hf.training.final"):
        result = train_final(config, space.fixed, candidates, tokenized, tokenizer, encoder)
    assert any("candidate trial 1 left out" in record.getMessage() for record in caplog.records)
    assert [record.label for record in result.candidates] == ["trial 2"] and result.combined == ("trial 2",)
    assert result.test_metrics["n"] == 64 and result.dev_metrics["mse"] < 1

    with pytest.raises(TrainingDiverged, match="every candidate of the final stage diverged"):
        train_final(config, space.fixed, candidates[:1], tokenized, tokenizer, encoder)
