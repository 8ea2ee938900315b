"""Checks of a run that need no data and no model, made before anything loads or a study is opened: the
`training:` values against TrainingArguments, the sampler and its options, the TrainingArguments, optimizer and
schedule every trial could get, the warm-start points. Each refusal names the key."""

from __future__ import annotations

import dataclasses
from typing import Any

from ..numeric_checks import check_keywords
from ..run.config import SAMPLER_OPTION_DOMAINS, ConfigError, RunConfig
from ..training.arguments import check_optimization
from ..training.build import base_training_arguments
from ..training.fields import check_training
from ..training.point import Point
from .space import SearchSpace
from .study import SAMPLER_CLASSES, make_sampler


def check_run(config: RunConfig, space: SearchSpace) -> RunConfig:
    """Checks that need no data or model (before anything loads or a study is opened): the tracker, the
    warm-start points, the `training:` values against TrainingArguments, the sampler options, the arguments and
    optimizer every trial could get. Returns the config with its `training:` values as TrainingArguments takes
    them (YAML 1.1 float strings read as numbers)."""
    check_tracker(config.report_to)
    for index, point in enumerate(config.warm_start):
        space.check_point(point, f"warm_start[{index}]")
    try:
        training = check_training(config.training)
    except ValueError as error:
        raise ConfigError(str(error)) from None
    make_sampler(config.sampler, config.seed, space, config.sampler_options)
    try:
        check_keywords(
            SAMPLER_CLASSES[config.sampler], config.sampler_options, "sampler_options", SAMPLER_OPTION_DOMAINS
        )
    except ValueError as error:
        raise ConfigError(str(error)) from None
    config = dataclasses.replace(config, training=training)
    check_trial_arguments(config, space)
    return config


def check_tracker(report_to: str) -> None:
    """ConfigError unless the tracker `--report-to` names is installed: the Trainer would otherwise refuse it only
    when the first trial starts, with the study already open."""
    from transformers.integrations import get_available_reporting_integrations

    if report_to != "none" and report_to not in get_available_reporting_integrations():
        raise ConfigError(
            f"--report-to {report_to}: {report_to} is not installed in this environment; pip install {report_to} "
            "(the [tracking] extra has tensorboard), or pass --report-to none"
        )


def check_trial_arguments(config: RunConfig, space: SearchSpace) -> None:
    """Build the TrainingArguments, optimizer and schedule (`check_optimization`) of a point of the space (the
    `training:` values, the fixed values, each searched parameter at its low or first choice), then of that point
    with each parameter moved to each of its other extremes, so that what TrainingArguments, torch or the
    scheduler refuse stops the run here, naming the key, instead of failing every trial that draws it. A range's
    rules hold inside it when they hold at both ends."""
    extremes = {parameter.name: parameter.extremes() for parameter in space.parameters}
    bare = dataclasses.replace(config, training={})
    output_dir = config.layout.trials  # named in the arguments, never created by building them

    def refusal(settings: dict[str, tuple[str, Any]]) -> str | None:
        """What refuses `settings` ({where: (field, value)}, later ones winning), or None."""
        try:
            check_optimization(base_training_arguments(bare, output_dir, **dict(settings.values())))
        except ValueError as error:
            return " ".join(str(error).split())  # one line: some of TrainingArguments' messages span several
        return None

    def settings(point: dict[str, tuple[str, Any]]) -> dict[str, tuple[str, Any]]:
        """{where: (field, value)} of `training:` and of the space's TrainingArguments at `point` ({name: (where,
        value)})."""
        found = {f"training.{key}": (key, value) for key, value in config.training.items()}
        for name, (where, value) in point.items():
            for item in Point.of({name: value}).training.items():
                found[where] = item
        return found

    first = {name: (f"search_space.{name}", value) for name, value in space.fixed.items()}
    first |= {name: next(iter(edges.items())) for name, edges in extremes.items()}
    base = settings(first)
    problem = refusal(base)
    if problem is not None:
        # The key to name: the first whose removal lifts or changes the refusal.
        without = {where: {key: item for key, item in base.items() if key != where} for where in base}
        culprit = next((where for where, rest in without.items() if refusal(rest) != problem), None)
        said = f"{culprit}: {base[culprit][1]!r}" if culprit else "training and search_space together"
        raise ConfigError(f"{said} is refused by TrainingArguments or the optimizer: {problem}")
    for name, edges in extremes.items():
        for where, value in edges.items():
            problem = refusal(settings({**first, name: (where, value)}))
            if problem is not None:
                raise ConfigError(f"{where}: {value!r} is refused by TrainingArguments or the optimizer: {problem}")


__all__ = ["check_run", "check_tracker", "check_trial_arguments"]
