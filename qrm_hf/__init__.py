"""qrm_hf: fine-tune a pretrained encoder into a reward model for search-query wellformedness.

Names are imported on first use, so `import qrm_hf.modeling_qrm` needs only torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QRMTrainer": "trainer",
    "QRMTrainingArguments": "training_args",
    "QueryRewardConfig": "configuration_qrm",
    "QueryRewardEnsemble": "modeling_qrm",
    "QueryRewardModel": "modeling_qrm",
    "QueryRewardOutput": "modeling_qrm",
    "QueryScorer": "scoring",
    "QueryScorerClient": "client",
    "RewardRule": "reward_rule",
    "RunConfig": "run_config",
    "SearchSpace": "search_space",
    "make_reward_function": "rewards",
    "QueryReward": "rewards",
    "AsyncQueryReward": "rewards",
    "PolicyTextCleaner": "policy_text",
    "DistillConfig": "distill",
    "distill": "distill",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'qrm_hf' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)


def __dir__() -> list[str]:
    return __all__
