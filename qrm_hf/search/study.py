"""Hyperparameter search through `Trainer.hyperparameter_search` with Optuna.

The study lives in an Optuna storage (SQLite by default), so the same command resumes it; `n_trials` counts
finished trials in the study, and only the missing ones run.
"""

from __future__ import annotations

import gc
import inspect
import logging
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch
from datasets import DatasetDict
from optuna.storages import BaseStorage
from optuna.trial import TrialState
from tqdm.auto import tqdm
from transformers import AutoModel, PreTrainedModel, PreTrainedTokenizerBase, TrainerCallback

from ..modeling.model_files import save_reward_model
from ..modeling.modeling_qrm import QueryRewardModel
from ..run.config import PRUNER_CLASS_NAMES, SAMPLER_CLASS_NAMES, RunConfig
from ..run.distributed import from_rank_zero
from ..run.folder import write_best_trial_record, write_optimization_history
from ..training.arguments import QRMTrainingArguments
from ..training.build import RunBuilder, make_trainer
from ..training.point import Point
from .space import SearchSpace
from .storage import make_storage, record_worker, retry_trials_of_dead_workers, storage_url_for_log
from .trials import DRAWN_BY, FINISHED, StudySummary, finished_trials, origin_at_start, summarize

logger = logging.getLogger(__name__)


SAMPLER_CLASSES = {name: getattr(optuna.samplers, class_name) for name, class_name in SAMPLER_CLASS_NAMES.items()}
# The median pruner waits for 4 trials and prunes from the first epoch (results/BENCHMARKS.md, pruning).
PRUNER_OPTIONS: dict[str, dict[str, Any]] = {"median": {"n_startup_trials": 4, "n_warmup_steps": 0}}
# Options qrm_hf sets itself: the seed (--seed) and, for grid, the grid (the search space).
RESERVED_SAMPLER_OPTIONS = {"seed", "search_space"}


class SamplerOptionsError(ValueError):
    """`sampler_options` that the chosen sampler does not take; the message lists what it does take."""


def make_sampler(
    name: str, seed: int, space: SearchSpace, options: dict[str, Any] | None = None
) -> optuna.samplers.BaseSampler:
    """An Optuna sampler by name, with `options` passed to its class (checked against its signature).

    TPE lies about running trials (`constant_liar`) unless told otherwise, so parallel workers spread out.

    Example:
        >>> make_sampler("tpe", 42, space, {"n_startup_trials": 4, "multivariate": True})  # doctest: +SKIP
    """
    if name not in SAMPLER_CLASSES:
        raise ValueError(f"unknown sampler {name!r}; choose one of {sorted(SAMPLER_CLASSES)}")
    sampler_class = SAMPLER_CLASSES[name]
    options = dict(options or {})
    accepted = set(inspect.signature(sampler_class.__init__).parameters) - {"self"} - RESERVED_SAMPLER_OPTIONS
    unknown = sorted(set(options) - accepted)
    if unknown:
        raise SamplerOptionsError(
            f"sampler_options {unknown} are not options of {sampler_class.__name__} (--sampler {name}); "
            f"it takes {sorted(accepted)} (seed comes from --seed)"
        )
    if name == "tpe":
        options.setdefault("constant_liar", True)
    if name == "grid":
        options["search_space"] = space.grid()
    with warnings.catch_warnings():  # constant_liar, multivariate, group are marked experimental in Optuna
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return sampler_class(seed=seed, **options)
        except (TypeError, ValueError) as error:
            raise SamplerOptionsError(f"sampler_options for {sampler_class.__name__}: {error}") from None


class TrialSeededSampler(optuna.samplers.BaseSampler):
    """`sampler`, with its random state reseeded from (seed, trial number) before each trial.

    Workers of one study start trials at the same moment and see the same history; seeded alike they would draw
    the same point (twice the same start-up trial). Trial numbers are unique in the storage, so each trial draws
    from its own stream, and one worker's run stays the same for the same seed.

    It also records this process as the trial's worker: Optuna calls `before_trial` the moment the trial is
    created, so a worker killed later leaves a trial that names it (`retry_trials_of_dead_workers`).

    Example:
        >>> sampler = TrialSeededSampler(optuna.samplers.RandomSampler(), seed=42)  # doctest: +SKIP
    """

    # Where Optuna's samplers keep the random states they draw from (their own, and their fallback sampler's).
    _NESTED = ("_random_sampler", "_independent_sampler")

    def __init__(self, sampler: optuna.samplers.BaseSampler, seed: int) -> None:
        self.sampler = sampler
        self.seed = seed

    def _reseed(self, number: int) -> None:
        stream = np.random.SeedSequence([self.seed, number]).generate_state(1)[0]
        for holder in (self.sampler, *(getattr(self.sampler, name, None) for name in self._NESTED)):
            rng = getattr(holder, "_rng", None)
            if rng is not None and hasattr(rng, "rng"):
                rng.rng.seed(int(stream))

    def before_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        record_worker(study, trial)
        self._reseed(trial.number)
        self.sampler.before_trial(study, trial)

    def infer_relative_search_space(self, study, trial):
        return self.sampler.infer_relative_search_space(study, trial)

    def sample_relative(self, study, trial, search_space):
        return self.sampler.sample_relative(study, trial, search_space)

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.sampler.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(self, study, trial, state, values) -> None:
        self.sampler.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.sampler.reseed_rng()


def startup_trials(sampler: optuna.samplers.BaseSampler) -> int:
    """How many finished trials the sampler waits for before it models the space (TPE, GP); 0 for the others."""
    inner = getattr(sampler, "sampler", sampler)
    return int(getattr(inner, "_n_startup_trials", 0))


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """An Optuna pruner by name; trials report their validation MSE after every epoch."""
    if name not in PRUNER_CLASS_NAMES:
        raise ValueError(f"unknown pruner {name!r}; choose one of {sorted(PRUNER_CLASS_NAMES)}")
    return getattr(optuna.pruners, PRUNER_CLASS_NAMES[name])(**PRUNER_OPTIONS.get(name, {}))


class TrialPoints:
    """The search's `hp_space` and `model_init`: a trial's point is drawn and split once, when transformers asks
    for its TrainingArguments values, and its model is built from that same point (its head; `max_length` and
    the rest through the arguments transformers set from it). Also records how the point was drawn."""

    def __init__(self, builder: RunBuilder, space: SearchSpace, args: QRMTrainingArguments, startup: int = 0) -> None:
        self.builder = builder
        self.space = space
        self.args = args
        self.startup = startup
        self.drawn: tuple[int, Point] | None = None

    def hp_space(self, trial: optuna.Trial) -> dict[str, Any]:
        point = self.builder.point(self.space.suggest(trial))
        self.drawn = (trial.number, point)
        return dict(point.training)

    def model_init(self, trial: optuna.Trial | None = None) -> QueryRewardModel:
        if isinstance(trial, optuna.Trial) and DRAWN_BY not in trial.user_attrs:
            trial.set_user_attr(DRAWN_BY, origin_at_start(trial, self.startup))
        number = getattr(trial, "number", None)
        if self.drawn is not None and number is not None and self.drawn[0] == number:
            point = self.drawn[1]
        else:  # the Trainer's first model, or a rank without the trial: the point of what is known
            point = self.builder.point(self.space.values(trial))
        return self.builder.model(point, self.args)


class TrialProgress(TrainerCallback):
    """A progress bar over the study's finished trials and one log line per finished trial.

    It reads the storage when a trial starts and once the search ends, so trials finished by other workers
    show too, with the state and duration the storage holds.
    """

    def __init__(self, study: optuna.Study, target: int) -> None:
        self.study = study
        self.target = target
        self.seen: set[int] = {trial.number for trial in finished_trials(study)}
        self.bar = tqdm(total=target, initial=min(len(self.seen), target), desc="Trials", unit="trial")

    def on_train_begin(self, args, state, control, **kwargs):
        self.refresh()

    def refresh(self) -> None:
        trials = self.study.get_trials(deepcopy=False, states=(*FINISHED, TrialState.FAIL))
        complete = [trial.value for trial in trials if trial.state == TrialState.COMPLETE]
        for trial in sorted(trials, key=lambda t: t.number):
            if trial.number in self.seen:
                continue
            self.seen.add(trial.number)
            duration = trial.duration.total_seconds() if trial.duration else float("nan")
            best = min((v for v in complete if v is not None), default=float("nan"))
            value = "-" if trial.value is None else f"{trial.value:.5f}"
            self.bar.write(
                f"trial {trial.number}: {trial.state.name.lower()} value={value} "
                f"duration={duration:.1f}s best_so_far={best:.5f}"
            )
            if trial.state in FINISHED:
                self.bar.update(1)

    def close(self) -> None:
        self.refresh()
        self.bar.close()


class KeepBestTrialModel(TrainerCallback):
    """Keep the best trial's own model: each trial's best-epoch weights are held in memory, and a trial that
    finishes (not pruned) with a better value than every completed trial so far is saved to `folder`, with
    `trial.json` naming it. Trials otherwise write nothing, so this is opt-in (`keep_best_trial_model`)."""

    def __init__(self, folder: Path, tokenizer: PreTrainedTokenizerBase) -> None:
        self.folder = folder
        self.tokenizer = tokenizer
        self.best_mse = float("inf")
        self.weights: dict[str, torch.Tensor] | None = None

    def on_train_begin(self, args, state, control, **kwargs):
        self.best_mse, self.weights = float("inf"), None

    def on_evaluate(self, args, state, control, metrics=None, model=None, **kwargs):
        mse = (metrics or {}).get("eval_mse")
        if model is not None and mse is not None and mse < self.best_mse:
            self.best_mse = mse
            self.weights = {name: tensor.detach().to("cpu", copy=True) for name, tensor in model.state_dict().items()}

    def trial_finished(self, trial: optuna.Trial, model: QueryRewardModel) -> Path | None:
        """Save `model` with this trial's best-epoch weights if the trial beats every completed trial."""
        if self.weights is None:
            return None
        completed = trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if any(other.value is not None and other.value <= self.best_mse for other in completed):
            return None
        model.load_state_dict(self.weights)
        save_reward_model(model, self.tokenizer, self.folder)
        write_best_trial_record(self.folder, trial.number, self.best_mse, trial.params)
        logger.info("trial %d is the best so far: its own model saved to %s", trial.number, self.folder)
        return self.folder


class StudyMismatchError(ValueError):
    """An existing study that this run must not continue: another direction or another search space."""


def check_study_matches(study: optuna.Study, space: SearchSpace) -> None:
    """Refuse to add trials to a study that optimizes another way or was searched over another space."""
    if study.direction != optuna.study.StudyDirection.MINIMIZE:
        raise StudyMismatchError(
            f"study {study.study_name!r} {study.direction.name.lower()}s its objective; qrm_hf minimizes the "
            "validation MSE: choose another --study-name (or --force to replace it)"
        )
    expected = space.distributions()
    for trial in study.get_trials(deepcopy=False):
        stored = trial.distributions
        if not stored:
            continue
        # A trial stopped while drawing its point (Ctrl-C, a killed worker) holds only the names drawn so far;
        # those must match, and only a finished trial must hold every name of the space.
        finished = trial.state in FINISHED
        names = set(stored) | set(expected) if finished else set(stored)
        differences = [
            f"{name}: stored {stored.get(name)!r}, now {expected.get(name)!r}"
            for name in sorted(names)
            if stored.get(name) != expected.get(name)
        ]
        if differences:
            raise StudyMismatchError(
                f"study {study.study_name!r} was searched over another space ({'; '.join(differences)}): "
                "choose another --study-name, restore the space, or --force to start again"
            )
        if finished:
            return


def run_storage(config: RunConfig) -> BaseStorage:
    """The storage of the run's study, with the run's heartbeat settings."""
    return make_storage(config.resolved_storage, config.heartbeat_interval, config.grace_period, config.max_retry)


def open_study(config: RunConfig, space: SearchSpace, storage: BaseStorage | None = None) -> optuna.Study:
    """Create or load the run's study; `force` deletes a study of the same name first. The config's
    `warm_start` points are enqueued (once per study), so they run before the sampler proposes anything.

    Every check (sampler options, warm-start points, storage reachable, direction, search space) happens
    before any trial runs, and none of them writes to an existing study.
    """
    sampler = TrialSeededSampler(make_sampler(config.sampler, config.seed, space, config.sampler_options), config.seed)
    warm_start = [space.check_point(point, f"warm_start[{index}]") for index, point in enumerate(config.warm_start)]
    storage = storage or run_storage(config)
    name = config.resolved_study_name
    if config.force and name in optuna.get_all_study_names(storage):
        logger.warning("--force: deleting study %r in %s", name, storage_url_for_log(storage))
        optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(
        storage=storage,
        study_name=name,
        direction="minimize",
        load_if_exists=True,
        sampler=sampler,
        pruner=make_pruner(config.pruner),
    )
    check_study_matches(study, space)
    for point in warm_start:
        study.enqueue_trial(point, skip_if_exists=True)
    return study


def run_search(
    config: RunConfig,
    space: SearchSpace,
    tokenized: DatasetDict,
    tokenizer: PreTrainedTokenizerBase,
    encoder: PreTrainedModel | None = None,
) -> optuna.Study | None:
    """Run trials until the study holds `n_trials` finished trials, then return it (None on ranks > 0).

    Trials run one `hyperparameter_search` call at a time, and a new one starts only while the study (shared
    by every worker) still misses finished trials: the target overshoots by at most workers - 1. Under DDP,
    rank 0 drives Optuna and the other ranks train the same trials.
    """
    # The arguments set up the distributed state (gloo on CPUs, NCCL on GPUs): build them first.
    builder = RunBuilder(config, space.fixed, encoder)
    args = builder.arguments(config.layout.trials, builder.point())
    main = args.process_index == 0
    storage = study = None
    missing = 0
    if main:
        storage = run_storage(config)
        study = open_study(config, space, storage)
        # A worker of this machine killed mid-trial (this run's previous life, say): its trial runs again first.
        retry_trials_of_dead_workers(study, config.max_retry)
        missing = config.n_trials - len(finished_trials(study))
        if missing <= 0:
            logger.info("study %r already holds %d finished trials: no search", study.study_name, config.n_trials)
        else:
            logger.info("study %r: %d finished trials missing", study.study_name, missing)
    if not from_rank_zero(missing > 0):
        return study

    torch.set_float32_matmul_precision("high")
    if builder.encoder is None:
        builder.encoder = AutoModel.from_pretrained(config.model_path())
    callbacks: list[TrainerCallback] = []
    progress = TrialProgress(study, config.n_trials) if main else None
    if progress is not None:
        callbacks.append(progress)
    if config.keep_best_trial_model and main:
        callbacks.append(KeepBestTrialModel(config.layout.best_trial_model, tokenizer))
    points = TrialPoints(builder, space, args, startup_trials(study.sampler) if main else 0)
    trainer = make_trainer(args, tokenizer, tokenized, model_init=points.model_init, callbacks=callbacks)
    # transformers runs gc.collect() several times between trials; frozen, the long-lived objects (data, encoder,
    # imported modules) are no longer scanned, which cuts the gap between trials (results/BENCHMARKS.md).
    gc.freeze()
    started = time.monotonic()

    def wanted() -> bool:
        in_time = config.timeout is None or time.monotonic() - started < config.timeout
        if not (main and in_time):
            return False
        # Another worker of this machine may have died since: its trial is re-queued before this one starts.
        retry_trials_of_dead_workers(study, config.max_retry)
        return len(finished_trials(study)) < config.n_trials

    try:
        while from_rank_zero(wanted()):
            try:
                trainer.hyperparameter_search(
                    hp_space=points.hp_space,
                    compute_objective=lambda metrics: metrics["eval_mse"],
                    n_trials=1,
                    direction="minimize",
                    backend="optuna",
                    hp_name=lambda trial: f"trial-{trial.number}",
                    study_name=config.resolved_study_name,
                    storage=storage,
                    load_if_exists=True,
                    sampler=study.sampler if main else None,
                    pruner=study.pruner if main else None,
                )
            except ValueError as error:
                # transformers asks the study for its best trial after each call: none yet if all were pruned.
                if not (main and "No trials are completed yet" in str(error)):
                    raise
    finally:
        gc.unfreeze()
        if progress is not None:
            progress.close()
        logger.info("search ran %.1fs", time.monotonic() - started)
    return study


def write_history(study: optuna.Study, space: SearchSpace, path: Path) -> StudySummary:
    """Summarize the study once and write its optimization_history.json; return the summary."""
    summary = summarize(study, space.fixed)
    write_optimization_history(summary.to_json(), path)
    return summary


__all__ = [
    "KeepBestTrialModel",
    "TrialPoints",
    "SamplerOptionsError",
    "TrialSeededSampler",
    "TrialProgress",
    "make_pruner",
    "make_sampler",
    "StudyMismatchError",
    "check_study_matches",
    "open_study",
    "run_storage",
    "run_search",
    "startup_trials",
    "write_history",
]
