"""A real study through Trainer.hyperparameter_search on the tiny model and real data rows."""

import json
import logging

import optuna
import pytest
import transformers
from optuna.trial import TrialState
from transformers import AutoModel, AutoTokenizer

from qrm_hf.data import load_splits, tokenize_splits
from qrm_hf.run.config import RunConfig
from qrm_hf.search.space import SearchSpace
from qrm_hf.search.study import open_study, run_search, write_history

SPACE = {
    "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
    "num_hidden_layers": {"type": "int", "low": 1, "high": 2},
    "activation": {"type": "categorical", "choices": ["relu", "gelu"]},
    "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
    "head_lr_multiplier": {"type": "float", "low": 1.0, "high": 11.0, "step": 5.0},
    "batch_size": {"type": "categorical", "choices": [16, 32]},
    "max_length": {"type": "categorical", "choices": [16, 32]},
    "num_epochs": {"type": "int", "low": 1, "high": 3},
}


@pytest.fixture(scope="module")
def prepared(data_dir, tiny_encoder_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    splits = load_splits(str(data_dir), max_train_samples=96, max_eval_samples=48, max_test_samples=48)
    return tokenizer, tokenize_splits(splits, tokenizer, 32), AutoModel.from_pretrained(tiny_encoder_dir)


def search(prepared, tmp_path, tiny_encoder_dir, **overrides):
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path), search_space=SPACE, **{"n_trials": 3, **overrides}
    )
    space = SearchSpace.from_dict(SPACE)
    return config, space, run_search(config, space, tokenized, tokenizer, encoder)


def test_study_runs_through_hyperparameter_search_and_resumes(prepared, tmp_path, tiny_encoder_dir, caplog):
    transformers.utils.logging.enable_propagation()
    with caplog.at_level(logging.WARNING):
        config, space, study = search(prepared, tmp_path, tiny_encoder_dir)
    assert "no corresponding field" not in caplog.text
    trials = study.get_trials(states=(TrialState.COMPLETE,))
    assert len(trials) == 3
    for trial in trials:
        # The objective is the best epoch's validation MSE, reported after every epoch.
        assert trial.value == pytest.approx(min(trial.intermediate_values.values()))
        epochs = trial.user_attrs["epochs_run"]
        assert sorted(trial.intermediate_values) == list(range(1, int(epochs) + 1))  # one report per epoch
        assert trial.user_attrs["best_epoch"] >= 1

    history = write_history(study, space, config.run_dir / "optimization_history.json")
    saved = json.loads((config.run_dir / "optimization_history.json").read_text())
    assert {"best_params", "best_value", "n_trials", "optimization_history"} <= set(saved)
    assert saved == json.loads(json.dumps(history.to_json()))
    assert saved["best_value"] == min(t.value for t in trials)
    assert saved["n_trials"] == 3
    assert [entry["trial"] for entry in saved["optimization_history"]] == [0, 1, 2]
    assert (config.run_dir / "study.db").is_file()

    # Same command with a higher target: only the missing trial runs.
    started = {t.number: t.datetime_start for t in trials}
    _, _, study = search(prepared, tmp_path, tiny_encoder_dir, n_trials=4)
    after = study.get_trials(states=(TrialState.COMPLETE,))
    assert [t.number for t in after] == [0, 1, 2, 3]
    assert {t.number: t.datetime_start for t in after if t.number < 3} == started

    # A study that already holds its target is not searched again.
    _, _, study = search(prepared, tmp_path, tiny_encoder_dir, n_trials=2)
    assert len(study.trials) == 4

    # --force starts a new study.
    _, _, study = search(prepared, tmp_path, tiny_encoder_dir, n_trials=1, force=True)
    assert [t.number for t in study.trials] == [0]


def test_identical_parameters_give_identical_trials(prepared, tmp_path, tiny_encoder_dir):
    """Each trial builds its model after the seed is set, so a trial is reproducible."""
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), search_space=SPACE, n_trials=2)
    space = SearchSpace.from_dict(SPACE)
    params = {
        "dropout": 0.1,
        "num_hidden_layers": 2,
        "activation": "gelu",
        "learning_rate": 5e-4,
        "head_lr_multiplier": 6.0,
        "batch_size": 16,
        "max_length": 16,
        "num_epochs": 2,
    }
    study = open_study(config, space)
    study.enqueue_trial(params)
    study.enqueue_trial(params)
    tokenizer, tokenized, encoder = prepared
    study = run_search(config, space, tokenized, tokenizer, encoder)
    first, second = study.get_trials(states=(TrialState.COMPLETE,))
    assert first.params == second.params == params
    assert first.value == second.value
    assert first.intermediate_values == second.intermediate_values


def test_samplers_and_pruners_by_name(tmp_path, tiny_encoder_dir):
    space = SearchSpace.from_dict(SPACE)
    default = open_study(
        RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path / "a"), search_space=SPACE), space
    )
    assert isinstance(default.sampler.sampler, optuna.samplers.TPESampler)
    assert isinstance(default.pruner, optuna.pruners.MedianPruner)  # the default, from results/BENCHMARKS.md
    config = RunConfig(
        model=str(tiny_encoder_dir), output_dir=str(tmp_path / "b"), search_space=SPACE, sampler="random", pruner="none"
    )
    study = open_study(config, space)
    assert isinstance(study.sampler.sampler, optuna.samplers.RandomSampler)
    assert isinstance(study.pruner, optuna.pruners.NopPruner)


@pytest.mark.parametrize("name", ["tpe", "random", "grid", "gp", "qmc"])
def test_every_sampler_draws_points_of_the_space(name):
    from qrm_hf.search.study import make_sampler

    space = SearchSpace.from_dict(
        {
            "dropout": {"type": "float", "low": 0.0, "high": 0.3, "step": 0.1},
            "num_epochs": {"type": "int", "low": 1, "high": 3},
            "activation": {"type": "categorical", "choices": ["relu", "gelu"]},
        }
    )
    study = optuna.create_study(sampler=make_sampler(name, 42, space))
    study.optimize(lambda trial: space.suggest(trial)["dropout"], n_trials=4)
    for trial in study.trials:
        assert trial.params["dropout"] in {0.0, 0.1, 0.2, 0.3}
        assert trial.params["num_epochs"] in {1, 2, 3}
        assert trial.params["activation"] in {"relu", "gelu"}


def test_sampler_options_reach_the_sampler_and_are_checked():
    from qrm_hf.search.study import SamplerOptionsError, make_sampler, startup_trials

    space = SearchSpace.from_dict(SPACE)
    sampler = make_sampler("tpe", 42, space, {"n_startup_trials": 4, "multivariate": True})
    assert startup_trials(sampler) == 4
    assert sampler._multivariate is True
    assert sampler._constant_liar is True  # qrm_hf's default for parallel workers stays unless overridden
    assert make_sampler("tpe", 42, space, {"constant_liar": False})._constant_liar is False
    with pytest.raises(SamplerOptionsError, match=r"\['n_startup'\] are not options of TPESampler.*n_startup_trials"):
        make_sampler("tpe", 42, space, {"n_startup": 4})
    with pytest.raises(SamplerOptionsError, match="seed comes from --seed"):
        make_sampler("random", 42, space, {"seed": 1})
    with pytest.raises(SamplerOptionsError, match="are not options of RandomSampler"):
        make_sampler("random", 42, space, {"n_startup_trials": 4})


def test_warm_start_points_run_first_and_each_trial_says_how_it_was_drawn(prepared, tmp_path, tiny_encoder_dir):
    point = {"dropout": 0.2, "num_hidden_layers": 1, "learning_rate": 5e-4, "num_epochs": 1, "max_length": 16}
    config, _, study = search(
        prepared,
        tmp_path,
        tiny_encoder_dir,
        n_trials=4,
        warm_start=[point],
        sampler_options={"n_startup_trials": 2},
    )
    trials = sorted(study.get_trials(states=(TrialState.COMPLETE, TrialState.PRUNED)), key=lambda t: t.number)
    assert {name: trials[0].params[name] for name in point} == point
    assert [trial.user_attrs["drawn_by"] for trial in trials] == [
        "warm start",
        "random start-up",
        "sampler",
        "sampler",
    ]
    # Resuming the study does not enqueue the point again.
    _, _, study = search(prepared, tmp_path, tiny_encoder_dir, n_trials=4, warm_start=[point])
    assert len(study.trials) == 4


@pytest.mark.parametrize(
    ("point", "message"),
    [
        ({"dropout": 0.9}, r"warm_start\[0\].dropout: 0.9 is outside the space \(\[0.0, 0.3\], step 0.1\)"),
        ({"activation": "swish"}, r"warm_start\[0\].activation: 'swish' is outside the space \(choices"),
        ({"pooling": "mean"}, r"warm_start\[0\].pooling: not a searched parameter; searched: dropout"),
    ],
)
def test_an_invalid_warm_start_point_is_refused_before_the_study_is_touched(tmp_path, tiny_encoder_dir, point, message):
    from qrm_hf.search.space import SearchSpaceError

    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), search_space=SPACE, warm_start=[point])
    with pytest.raises(SearchSpaceError, match=message):
        open_study(config, SearchSpace.from_dict(SPACE))
    assert not (tmp_path / config.model_slug / "study.db").exists()


def test_a_head_without_hidden_layers_can_be_searched(prepared, tmp_path, tiny_encoder_dir):
    space = {**SPACE, "num_hidden_layers": {"type": "int", "low": 0, "high": 0}, "num_epochs": 1}
    tokenizer, tokenized, encoder = prepared
    config = RunConfig(model=str(tiny_encoder_dir), output_dir=str(tmp_path), search_space=space, n_trials=1)
    study = run_search(config, SearchSpace.from_dict(space), tokenized, tokenizer, encoder)
    (trial,) = study.get_trials(states=(TrialState.COMPLETE,))
    assert trial.params["num_hidden_layers"] == 0


def test_the_best_trials_own_model_is_kept(prepared, tmp_path, tiny_encoder_dir):
    from qrm_hf.scoring.scorer import QueryScorer

    config, _, study = search(prepared, tmp_path, tiny_encoder_dir, n_trials=3, keep_best_trial_model=True)
    folder = config.run_dir / "best_trial_model"
    kept = json.loads((folder / "trial.json").read_text())
    assert kept["trial"] == study.best_trial.number
    assert kept["value"] == pytest.approx(study.best_value)
    scores = QueryScorer.from_pretrained(folder).score(["how do owls hunt ?"])
    assert len(scores) == 1


@pytest.mark.parametrize("name", ["tpe", "random", "gp", "qmc"])
def test_two_workers_started_together_never_draw_the_same_point(tmp_path, name):
    """Two workers of one study, seeded alike, ask for trials at the same moment: plain samplers hand both the
    same start-up point; seeded per trial, each trial draws its own, and a rerun with the seed repeats the run."""
    from qrm_hf.search.study import TrialSeededSampler, make_sampler

    space = SearchSpace.from_dict(SPACE)
    storage = f"sqlite:///{tmp_path / 'study.db'}"

    def draw_together(wrap: bool, study_name: str) -> list[dict]:
        workers = []
        for _ in range(2):
            sampler = make_sampler(name, 42, space)
            workers.append(
                optuna.create_study(
                    storage=storage,
                    study_name=study_name,
                    load_if_exists=True,
                    sampler=TrialSeededSampler(sampler, 42) if wrap else sampler,
                )
            )
        points = []
        for _ in range(3):  # three rounds: both ask, then both tell
            trials = [worker.ask() for worker in workers]
            points += [space.suggest(trial) for trial in trials]
            for worker, trial in zip(workers, trials, strict=True):
                worker.tell(trial, 0.1)
        return points

    if name in ("tpe", "random"):  # the failure this guards against
        plain = draw_together(False, "plain")
        assert plain[0] == plain[1]
    seeded = draw_together(True, "seeded")
    assert all(seeded[i] != seeded[i + 1] for i in range(0, len(seeded), 2))
    assert draw_together(True, "again") == seeded
