"""Combining fine-tunes of one pretrained encoder: by averaging their weights (a model soup, Wortsman et al.
2022) or their predictions (an ensemble).

A hyperparameter search leaves several good configurations; the final stage may train the best few on all of
train and combine them. A soup is one model of the same architecture: it loads, scores and serves exactly like
a single fine-tune, at no extra inference cost. An ensemble keeps every member and averages their scores: one
forward pass per member, and the members' spread is an uncertainty. Both greedy recipes add an ingredient only
when the combination scores better on dev, so the result is never worse on dev than its best ingredient.
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


def greedy_choice(ingredients: Sequence[Any], dev_mse_of: Callable[[list[Any]], float]) -> tuple[list[Any], float]:
    """Sort `ingredients` (anything with a `dev_mse`) best first, start from the best, and add each next one if
    the combination with it (`dev_mse_of` a list of ingredients) has a dev MSE no higher than without it."""
    if not ingredients:
        raise ValueError("a combination needs at least one ingredient")
    ordered = sorted(ingredients, key=lambda ingredient: ingredient.dev_mse)
    chosen = [ordered[0]]
    best_mse = ordered[0].dev_mse
    for candidate in ordered[1:]:
        mse = dev_mse_of([*chosen, candidate])
        if mse <= best_mse:
            chosen.append(candidate)
            best_mse = mse
    return chosen, best_mse


def greedy_soup(ingredients: Sequence[Ingredient], dev_mse_of: Callable[[dict[str, torch.Tensor]], float]) -> Soup:
    """Wortsman et al.'s greedy soup: sort the ingredients by dev MSE, start from the best, and add each next one
    if the uniform average of the soup with it has a dev MSE no higher than the soup's. `dev_mse_of` scores a
    state dict on dev."""
    chosen, best_mse = greedy_choice(
        ingredients, lambda subset: dev_mse_of(average_weights([ingredient.weights for ingredient in subset]))
    )
    weights = average_weights([ingredient.weights for ingredient in chosen])
    return Soup(labels=tuple(ingredient.label for ingredient in chosen), weights=weights, dev_mse=best_mse)


def greedy_ensemble(
    ingredients: Sequence[Ingredient], dev_predictions: dict[str, Any], dev_true: Any
) -> tuple[tuple[str, ...], float]:
    """The greedy recipe over predictions: an ingredient joins when the mean of the members' dev predictions
    (`dev_predictions` by label) has a dev MSE no higher than without it. Returns the members' labels, best
    first, and the ensemble's dev MSE."""
    import numpy as np

    true = np.asarray(dev_true, dtype=float)

    def dev_mse_of(subset: list[Ingredient]) -> float:
        mean = np.mean([np.asarray(dev_predictions[ingredient.label], dtype=float) for ingredient in subset], axis=0)
        return float(np.mean((mean - true) ** 2))

    chosen, best_mse = greedy_choice(ingredients, dev_mse_of)
    return tuple(ingredient.label for ingredient in chosen), best_mse


__all__ = [
    "WEIGHTLESS_VALUES",
    "Ingredient",
    "Soup",
    "average_weights",
    "greedy_choice",
    "greedy_ensemble",
    "greedy_soup",
    "soup_key",
]
