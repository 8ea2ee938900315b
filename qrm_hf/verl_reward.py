"""verl's custom reward function: the query reward model as `compute_score`, loaded by file path.

verl imports a reward file by path and calls one of its functions: `compute_score(data_source, solution_str,
ground_truth, extra_info)` per response (its default reward manager) or, with `reward_model.reward_manager=batch`,
`compute_score_batch(data_sources, solution_strs, ground_truths, extra_infos)` for a whole batch. Neither signature
has room for a model, so the model comes from the environment: `QRM_REWARD_MODEL` (a saved folder, a Hub id or the
URL of `qrm serve`), loaded once per worker process as a [`QueryReward`] with its default rule.

    QRM_REWARD_MODEL=results/all-mpnet-base-v2/final_model python -m verl.trainer.main_ppo \\
        custom_reward_function.path=$(python -c "import qrm_hf.verl_reward as m; print(m.__file__)") \\
        custom_reward_function.name=compute_score
"""

from __future__ import annotations

import os
from typing import Any

MODEL_ENV = "QRM_REWARD_MODEL"
_rewards: dict[str, Any] = {}


def reward_object() -> Any:
    """The process's [`QueryReward`] of `$QRM_REWARD_MODEL` (loaded on first use)."""
    model = os.environ.get(MODEL_ENV)
    if not model:
        raise RuntimeError(
            f"{MODEL_ENV} is not set: export {MODEL_ENV}=<a saved reward model folder, Hub id or qrm serve URL>"
        )
    if model not in _rewards:
        from qrm_hf.scoring.rewards import QueryReward  # absolute: verl loads this file by path, outside its package

        _rewards[model] = QueryReward(model)
    return _rewards[model]


def compute_score(
    data_source: Any = None, solution_str: str = "", ground_truth: Any = None, extra_info: Any = None, **kwargs: Any
) -> float:
    """The reward of one response (verl's default reward manager); the prompt, when verl passes it in
    `extra_info["prompt"]`, feeds the prompt guard."""
    return compute_score_batch([data_source], [solution_str], [ground_truth], [extra_info])[0]


def compute_score_batch(
    data_sources: list[Any] | None = None,
    solution_strs: list[str] | None = None,
    ground_truths: list[Any] | None = None,
    extra_infos: list[Any] | None = None,
    **kwargs: Any,
) -> list[float]:
    """The rewards of a batch of responses (verl's `batch` reward manager), in one scoring pass."""
    responses = list(solution_strs or [])
    infos = list(extra_infos or [None] * len(responses))
    prompts = [info.get("prompt", "") if isinstance(info, dict) else "" for info in infos]
    return reward_object()(prompts=prompts, completions=responses)


__all__ = ["MODEL_ENV", "compute_score", "compute_score_batch", "reward_object"]
