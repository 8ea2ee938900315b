"""qrm_hf: fine-tune a pretrained encoder into a reward model for search-query wellformedness.

Names are imported on first use, so `import qrm_hf.modeling.modeling_qrm` needs only torch and transformers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "QRMTrainer": "training.trainer",
    "QRMTrainingArguments": "training.arguments",
    "QueryRewardConfig": "modeling.configuration_qrm",
    "QueryRewardEnsemble": "modeling.modeling_qrm",
    "QueryRewardModel": "modeling.modeling_qrm",
    "QueryRewardOutput": "modeling.modeling_qrm",
    "QueryScorer": "scoring.scorer",
    "QueryScorerClient": "scoring.client",
    "RewardRule": "scoring.reward_rule",
    "RunConfig": "run.config",
    "SearchSpace": "search.space",
    "make_reward_function": "scoring.rewards",
    "QueryReward": "scoring.rewards",
    "AsyncQueryReward": "scoring.rewards",
    "PolicyTextCleaner": "scoring.policy_text",
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
