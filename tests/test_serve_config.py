"""ServeConfig: every bad field refused by name, with its flag."""

import math

import pytest

from qrm_hf.scoring.reward_rule import RewardRule
from qrm_hf.serving.config import CPU_PASS_OVERHEAD_TOKENS, DEFAULT_MAX_REQUEST_TOKENS, ServeConfig


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"max_batch_size": 0}, r"max_batch_size \(--max-batch-size\) must be >= 1, got 0"),
        ({"max_batch_tokens": 0}, r"max_batch_tokens \(--max-batch-tokens\) must be >= 1, got 0"),
        ({"pass_overhead_tokens": -1}, r"pass_overhead_tokens \(--pass-overhead-tokens\) must be >= 0, got -1"),
        ({"backend": "onnx"}, r"backend \(--backend\) must be one of torch, int8, got 'onnx'"),
        ({"empty_score": math.nan}, r"empty_score \(--empty-score\): empty_score must be a finite number"),
        ({"max_repeated_share": 1.5}, r"max_repeated_share \(--max-repeated-share\): .* in \[0, 1\)"),
        ({"min_content_words": -1}, r"min_content_words \(--min-content-words\): .* whole number >= 0"),
        ({"max_queries_per_request": 0}, r"max_queries_per_request \(--max-queries-per-request\) must be >= 1"),
        ({"max_body_bytes": 0}, r"max_body_bytes \(--max-body-bytes\) must be >= 1"),
        ({"max_request_tokens": 0}, r"max_request_tokens \(--max-request-tokens\) must be >= 1, got 0"),
        ({"shutdown_grace_seconds": -1.0}, r"shutdown_grace_seconds \(--shutdown-grace-seconds\) must be .* >= 0"),
        ({"shutdown_grace_seconds": math.inf}, r"shutdown_grace_seconds \(--shutdown-grace-seconds\) .* got inf"),
        ({"shutdown_grace_seconds": math.nan}, r"shutdown_grace_seconds \(--shutdown-grace-seconds\) .* got nan"),
        ({"port": 70000}, r"port \(--port\) must be in 0..65535, got 70000"),
        ({"dtype": "fp16"}, r"dtype \(--dtype\) must be one of float32, bfloat16, float16, got 'fp16'"),
        ({"model": ""}, r"model \(--model\) is required"),
    ],
)
def test_serve_config_names_the_bad_field(values, message):
    with pytest.raises(ValueError, match=message):
        ServeConfig(**{"model": "runs/final_model", **values})


def test_the_servers_reward_rule_comes_from_its_fields():
    config = ServeConfig(model="m", empty_score=-1.0, length_guard=False, max_repeated_share=0.4, min_content_words=2)
    assert config.rule() == RewardRule(
        empty_score=-1.0, length_guard=False, max_repeated_share=0.4, min_content_words=2
    )
    assert ServeConfig(model="m").rule() == RewardRule()


def test_the_pass_overhead_defaults_by_device_and_a_given_one_wins():
    assert ServeConfig(model="m").pass_overhead("cpu") == CPU_PASS_OVERHEAD_TOKENS
    assert ServeConfig(model="m").pass_overhead("cuda") is None
    assert ServeConfig(model="m", pass_overhead_tokens=0).pass_overhead("cpu") == 0
    assert ServeConfig(model="m", pass_overhead_tokens=500).pass_overhead("cuda") == 500


def test_the_request_and_shutdown_bounds_are_flags_with_their_defaults():
    from qrm_hf.commands.serve import make_parser

    help_text = " ".join(make_parser().format_help().split())
    assert "--max-request-tokens MAX_REQUEST_TOKENS" in help_text and "(default: 262144)" in help_text
    assert "--shutdown-grace-seconds SHUTDOWN_GRACE_SECONDS" in help_text and "(default: 10.0)" in help_text
    args = make_parser().parse_args(["--model", "m", "--max-request-tokens", "4096", "--shutdown-grace-seconds", "2.5"])
    config = ServeConfig(**vars(args))
    assert (config.max_request_tokens, config.shutdown_grace_seconds) == (4096, 2.5)
    assert ServeConfig(model="m").max_request_tokens == DEFAULT_MAX_REQUEST_TOKENS == 2**18
