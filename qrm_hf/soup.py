"""Model soups: fine-tunes of one pretrained encoder, combined by averaging their weights (Wortsman et al. 2022).

A hyperparameter search leaves several good configurations; the final stage may train the best few on all of
train and average their weights. The result is one model of the same architecture: it loads, scores and serves
exactly like a single fine-tune, at no extra inference cost. The greedy recipe adds an ingredient only when the
average scores better on dev, so a soup is never worse on dev than its best ingredient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Head values that do not shape the weights or what they mean in eval mode: dropout is off at inference.
WEIGHTLESS_VALUES = frozenset({"dropout", "encoder_dropout"})


@dataclass(frozen=True)
class Ingredient:
    """One fine-tune that may go into a soup: its weights (on CPU) and its dev MSE, with a label for reports."""

    label: str
    weights: dict[str, torch.Tensor]
    dev_mse: float


@dataclass(frozen=True)
class Soup:
    """The chosen ingredients (labels, best first), the averaged weights and their dev MSE."""

    labels: tuple[str, ...]
    weights: dict[str, torch.Tensor]
    dev_mse: float


def soup_key(model_values: dict[str, Any], max_length: int) -> tuple:
    """What two configurations must share to be averaged: the head's shape, pooling, loss and input length.

    Example:
        >>> soup_key({"num_hidden_layers": 0, "dropout": 0.1, "loss": "mse"}, 64) == \\
        ...     soup_key({"num_hidden_layers": 0, "dropout": 0.3, "loss": "mse"}, 64)
        True
    """
    shaping = {name: value for name, value in model_values.items() if name not in WEIGHTLESS_VALUES}
    return (*sorted(shaping.items()), ("max_length", max_length))


def average_weights(state_dicts: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of state dicts with the same keys and shapes; integer buffers (position ids) are
    taken from the first, since they are equal in every fine-tune of one encoder.

    Example:
        >>> average_weights([{"w": torch.tensor([0.0, 2.0])}, {"w": torch.tensor([2.0, 4.0])}])["w"]
        tensor([1., 3.])
    """
    if not state_dicts:
        raise ValueError("a soup needs at least one ingredient")
    first = state_dicts[0]
    for index, other in enumerate(state_dicts[1:], start=1):
        if other.keys() != first.keys():
            missing = sorted(set(first) ^ set(other))[:3]
            raise ValueError(f"ingredient {index} has other weights than ingredient 0 (e.g. {missing})")
        for name, tensor in first.items():
            if other[name].shape != tensor.shape:
                raise ValueError(
                    f"ingredient {index}: {name} has shape {tuple(other[name].shape)}, not {tuple(tensor.shape)}"
                )
    averaged = {}
    for name, tensor in first.items():
        if tensor.is_floating_point():
            stacked = torch.stack([state[name].float() for state in state_dicts])
            averaged[name] = stacked.mean(dim=0).to(tensor.dtype)
        else:
            averaged[name] = tensor.clone()
    return averaged


def greedy_soup(ingredients: Sequence[Ingredient], dev_mse_of: Callable[[dict[str, torch.Tensor]], float]) -> Soup:
    """Wortsman et al.'s greedy soup: sort the ingredients by dev MSE, start from the best, and add each next one
    if the uniform average of the soup with it has a dev MSE no higher than the soup's. `dev_mse_of` scores a
    state dict on dev."""
    if not ingredients:
        raise ValueError("a soup needs at least one ingredient")
    ordered = sorted(ingredients, key=lambda ingredient: ingredient.dev_mse)
    chosen = [ordered[0]]
    best_mse = ordered[0].dev_mse
    for candidate in ordered[1:]:
        trial_weights = average_weights([ingredient.weights for ingredient in (*chosen, candidate)])
        mse = dev_mse_of(trial_weights)
        if mse <= best_mse:
            chosen.append(candidate)
            best_mse = mse
    weights = average_weights([ingredient.weights for ingredient in chosen])
    return Soup(labels=tuple(ingredient.label for ingredient in chosen), weights=weights, dev_mse=best_mse)


__all__ = ["WEIGHTLESS_VALUES", "Ingredient", "Soup", "average_weights", "greedy_soup", "soup_key"]
