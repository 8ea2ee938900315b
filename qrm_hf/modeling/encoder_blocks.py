"""The encoder's transformer blocks, told apart by parameter name: how deep each parameter sits below the top
block, and fresh weights for the top blocks.

Training uses the depths for layer-wise learning-rate decay; `reinit_top_layers` re-initialises the top blocks
before a run. Both read the same names, so a layout one of them understands the other does too.
"""

from __future__ import annotations

import re

import torch

from .modeling_qrm import QueryRewardModel, initialize_layer

# The prefix of the head's parameters (QueryRewardModel.head); everything else is the encoder's.
HEAD_PREFIX = "head."
# The transformer block a parameter belongs to: `encoder.layer.3.` (BERT, MiniLM), `layers.3.` (ModernBERT).
_LAYER_INDEX = re.compile(r"(?:^|\.)layers?\.(\d+)\.")


def encoder_depths(names: list[str]) -> dict[str, int]:
    """How many blocks below the top block each encoder parameter sits: 0 for the top block and for what
    follows it, `num_layers` for the embeddings.

    Example:
        >>> encoder_depths(["encoder.embeddings.w", "encoder.encoder.layer.0.w", "encoder.encoder.layer.1.w"])
        {'encoder.embeddings.w': 2, 'encoder.encoder.layer.0.w': 1, 'encoder.encoder.layer.1.w': 0}
    """
    indices = {name: int(match.group(1)) for name in names if (match := _LAYER_INDEX.search(name))}
    if not indices:
        return {}
    top = max(indices.values())
    depths = {}
    for name in names:
        if name in indices:
            depths[name] = top - indices[name]
        elif "embeddings." in name:
            depths[name] = top + 1
    return depths


def model_depths(model: torch.nn.Module) -> dict[str, int]:
    """`encoder_depths` of a QueryRewardModel's encoder parameters (the head's left out)."""
    return encoder_depths([name for name, _ in model.named_parameters() if not name.startswith(HEAD_PREFIX)])


def reinitialize_top_blocks(model: QueryRewardModel, count: int) -> list[str]:
    """Give the top `count` encoder blocks fresh weights, as the encoder's own initialisation would (normal Linear
    weights of its `initializer_range`, zero biases, unit LayerNorms); returns the re-initialised modules' names.
    ValueError when the encoder has fewer blocks, or none that can be told apart by name."""
    if count <= 0:
        return []
    depths = model_depths(model)
    blocks = 1 + max((depth for name, depth in depths.items() if "embeddings." not in name), default=-1)
    if count > blocks:
        raise ValueError(f"reinit_top_layers={count}, but the encoder has {blocks} blocks that can be re-initialised")
    std = getattr(model.config.encoder, "initializer_range", 0.02)
    renewed = []
    with torch.no_grad():
        for name, module in model.named_modules():
            in_top_block = depths.get(f"{name}.weight", count) < count and "embeddings." not in name
            if in_top_block and initialize_layer(module, std):
                renewed.append(name)
    return renewed


__all__ = ["HEAD_PREFIX", "encoder_depths", "model_depths", "reinitialize_top_blocks"]
