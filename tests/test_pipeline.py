"""One run end to end: settings that need no data are checked before anything loads."""

import pytest

from qrm_hf.pipeline import run_pipeline
from qrm_hf.run.config import RunConfig
from qrm_hf.search.checks import check_run
from qrm_hf.search.space import SearchSpace, SearchSpaceError
from qrm_hf.search.study import SamplerOptionsError

SPACE = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-4, "log": True}, "num_epochs": 1}


def test_bad_sampler_options_stop_the_run_before_data_or_model_load(tmp_path):
    config = RunConfig(
        model=str(tmp_path / "no-such-encoder"),
        data=str(tmp_path / "no-such-data"),
        output_dir=str(tmp_path / "out"),
        search_space=SPACE,
        sampler_options={"n_startup": 2},
    )
    with pytest.raises(SamplerOptionsError, match="n_startup"):
        run_pipeline(config)
    assert not (tmp_path / "out").exists()


def test_a_warm_start_point_outside_the_space_is_refused():
    config = RunConfig(search_space=SPACE, warm_start=[{"learning_rate": 1.0}])
    with pytest.raises(SearchSpaceError, match=r"warm_start\[0\].learning_rate: 1.0 is outside the space"):
        check_run(config, SearchSpace.from_dict(SPACE))


def test_a_tracker_that_is_not_installed_is_refused_before_the_study(monkeypatch):
    """`--report-to` is checked against what transformers finds installed: tensorboard (the [tracking] extra) is,
    a tracker that is missing stops the run naming the flag, instead of failing when the first trial starts."""
    from transformers import integrations

    from qrm_hf.run.config import ConfigError

    space = SearchSpace.from_dict(SPACE)
    check_run(RunConfig(search_space=SPACE, report_to="tensorboard"), space)
    monkeypatch.setattr(integrations, "get_available_reporting_integrations", lambda: ["mlflow"])
    with pytest.raises(ConfigError, match="--report-to tensorboard: tensorboard is not installed in this environment"):
        check_run(RunConfig(search_space=SPACE, report_to="tensorboard"), space)
    check_run(RunConfig(search_space=SPACE, report_to="mlflow"), space)
