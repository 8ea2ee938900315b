"""The query reward model: a pretrained encoder, a pooling step and an MLP regression head.

Self-contained (it imports only torch, transformers and its own config) so that a saved folder loads with
`AutoModel.from_pretrained(folder, trust_remote_code=True)` where qrm_hf is not installed.
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from transformers import AutoModel, PreTrainedModel
from transformers.utils import ModelOutput

from .configuration_qrm import QueryRewardConfig, auto_map_for

_ACTIVATIONS = {
    "relu": nn.ReLU,
    "gelu": nn.GELU,
    "tanh": nn.Tanh,
    "leaky_relu": nn.LeakyReLU,
}


@dataclass
class QueryRewardOutput(ModelOutput):
    """Output of [`QueryRewardModel`].

    `logits` has shape `(batch, 1)` as transformers' pipelines expect; `scores` is the same values flattened
    to `(batch,)`. Both are the model's score: the head's raw output for a `mse` model (a well-trained one keeps
    it near [0, 1] but nothing clamps it), its sigmoid for a `bce` model (in [0, 1] by construction). So a
    pipeline with `function_to_apply="none"` gives the score whatever the loss. An ensemble's `scores` are its
    members' mean and `spread` their standard deviation, shape `(batch,)`: how much the members disagree, an
    uncertainty (None for a single model).
    """

    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None
    scores: torch.Tensor | None = None
    spread: torch.Tensor | None = None


class RegressionHead(nn.Module):
    """Dropout, then `num_hidden_layers` x (Linear -> [LayerNorm] -> activation -> Dropout), then Linear -> 1."""

    def __init__(self, config: QueryRewardConfig) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Dropout(config.dropout)]
        width_in = config.encoder.hidden_size
        for width in config.head_widths():
            layers.append(nn.Linear(width_in, width))
            if config.use_layer_norm:
                layers.append(nn.LayerNorm(width))
            layers.append(_ACTIVATIONS[config.activation]())
            layers.append(nn.Dropout(config.dropout))
            width_in = width
        layers.append(nn.Linear(width_in, 1))
        self.layers = nn.Sequential(*layers)

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.layers(pooled)


def initialize_layer(layer: nn.Module, std: float) -> bool:
    """BERT's initialisation of one layer: a Linear gets normal weights of `std` and zero bias, a LayerNorm unit
    weight and zero bias; returns whether `layer` was one of them."""
    if isinstance(layer, nn.Linear):
        nn.init.normal_(layer.weight, mean=0.0, std=std)
    elif isinstance(layer, nn.LayerNorm):
        nn.init.ones_(layer.weight)
    else:
        return False
    if layer.bias is not None:
        nn.init.zeros_(layer.bias)
    return True


def pool(hidden_states: torch.Tensor, attention_mask: torch.Tensor | None, pooling: str) -> torch.Tensor:
    """Reduce `(batch, seq, hidden)` to `(batch, hidden)`: first token, or mean over real (unpadded) tokens."""
    if pooling == "cls" or attention_mask is None:
        return hidden_states[:, 0] if pooling == "cls" else hidden_states.mean(dim=1)
    mask = attention_mask.unsqueeze(-1).to(hidden_states.dtype)
    return (hidden_states * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)


class QueryRewardModel(PreTrainedModel):
    """Scores how well-formed a search query is: encoder -> pooling -> MLP head -> one float.

    Example:
        >>> model = QueryRewardModel.from_pretrained("path/or/hub-id")  # doctest: +SKIP
        >>> out = model(**tokenizer(["how do owls hunt ?"], return_tensors="pt"))  # doctest: +SKIP
        >>> out.scores  # doctest: +SKIP
    """

    config_class = QueryRewardConfig
    base_model_prefix = "query_reward"
    supports_gradient_checkpointing = True
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: QueryRewardConfig) -> None:
        super().__init__(config)
        self.encoder = AutoModel.from_config(config.encoder)
        self.head = RegressionHead(config)
        self.post_init()

    @classmethod
    def from_encoder(cls, encoder: PreTrainedModel, **head_kwargs) -> QueryRewardModel:
        """A new reward model around a copy of `encoder`'s weights, with a freshly initialised head.

        Example:
            >>> encoder = AutoModel.from_pretrained("answerdotai/ModernBERT-base")  # doctest: +SKIP
            >>> model = QueryRewardModel.from_encoder(encoder, num_hidden_layers=2, activation="relu")  # doctest: +SKIP
        """
        config = cls.config_class(encoder=encoder.config.to_dict(), **head_kwargs)
        model = cls(config)
        model.encoder.load_state_dict(encoder.state_dict())
        return model

    def _init_weights(self, module: nn.Module) -> None:
        # Only the head is ours to initialise; the encoder was initialised by its own class (or is loaded).
        if isinstance(module, RegressionHead):
            std = getattr(self.config.encoder, "initializer_range", 0.02)
            for layer in module.layers:
                initialize_layer(layer, std)

    def get_input_embeddings(self) -> nn.Module:
        return self.encoder.get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        token_type_ids: torch.Tensor | None = None,
        **kwargs,
    ) -> QueryRewardOutput:
        """Score a batch; with `labels` (target scores in [0, 1]) also return the loss (`config.loss`).

        `token_type_ids` is accepted for tokenizers that emit it and ignored: a query is one segment.
        """
        encoded = self.encoder(input_ids=input_ids, attention_mask=attention_mask, inputs_embeds=inputs_embeds)
        pooled = pool(encoded.last_hidden_state, attention_mask, self.config.pooling)
        head_output = self.head(pooled).squeeze(-1)
        bounded = self.config.loss == "bce"
        scores = torch.sigmoid(head_output) if bounded else head_output
        loss = None
        if labels is not None:
            # In float32 even under bf16 autocast: the targets are fifths and the loss is small.
            targets = labels.float().view(-1)
            if bounded:
                # Cross-entropy against the soft label (the fraction of raters who said well-formed).
                loss = nn.functional.binary_cross_entropy_with_logits(head_output.float(), targets)
            else:
                loss = nn.functional.mse_loss(scores.float(), targets)
        return QueryRewardOutput(loss=loss, logits=scores.unsqueeze(-1), scores=scores)


class QueryRewardEnsemble(PreTrainedModel):
    """Fine-tunes of one architecture whose scores are averaged: one model folder, `config.ensemble_size`
    members, each a [`QueryRewardModel`]. The output's `spread` (the members' standard deviation) says how much
    they disagree, which a reward can penalise. It costs one forward pass per member.

    Example:
        >>> ensemble = QueryRewardEnsemble.from_members([model_a, model_b])  # doctest: +SKIP
        >>> ensemble(**tokenizer(["how do owls hunt ?"], return_tensors="pt")).spread  # doctest: +SKIP
    """

    config_class = QueryRewardConfig
    base_model_prefix = "query_reward_ensemble"
    _supports_sdpa = True
    _supports_flash_attn = True

    def __init__(self, config: QueryRewardConfig) -> None:
        super().__init__(config)
        member = copy.deepcopy(config)
        member.ensemble_size = 1
        member.auto_map = auto_map_for(1)
        self.members = nn.ModuleList([QueryRewardModel(member) for _ in range(config.ensemble_size)])
        self.post_init()

    @classmethod
    def from_members(cls, members: Sequence[QueryRewardModel]) -> QueryRewardEnsemble:
        """An ensemble holding copies of `members`' weights; they must share one architecture (their configs may
        differ in dropout only, which is off at inference). The first member's config is kept."""
        if len(members) < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {len(members)}")
        shapes = [
            sorted((name, tuple(tensor.shape)) for name, tensor in member.state_dict().items()) for member in members
        ]
        for index, shape in enumerate(shapes[1:], start=1):
            if shape != shapes[0]:
                raise ValueError(f"member {index} has another architecture than member 0: they cannot be one ensemble")
        ensemble = cls.from_weights(members[0].config, [member.state_dict() for member in members])
        return ensemble.to(next(members[0].parameters()).device)

    @classmethod
    def from_weights(cls, config: QueryRewardConfig, state_dicts: Sequence[dict[str, torch.Tensor]]):
        """An ensemble of one member per state dict, all of the single-model architecture `config` describes."""
        config = copy.deepcopy(config)
        config.ensemble_size = len(state_dicts)
        config.auto_map = auto_map_for(len(state_dicts))
        ensemble = cls(config)
        for target, weights in zip(ensemble.members, state_dicts, strict=True):
            target.load_state_dict(weights)
        return ensemble

    def _init_weights(self, module: nn.Module) -> None:
        # Nothing to do: each member initialised its own head when it was built, and the ensemble has no weights
        # of its own (they are then loaded, from the members or from a saved folder).
        return

    def get_input_embeddings(self) -> nn.Module:
        return self.members[0].get_input_embeddings()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        **kwargs,
    ) -> QueryRewardOutput:
        """The members' mean score and their spread; with `labels`, the loss of the mean score (`config.loss`).
        Other arguments (`inputs_embeds`, `token_type_ids`) reach each member as they would a single model."""
        each = torch.stack(
            [member(input_ids=input_ids, attention_mask=attention_mask, **kwargs).scores for member in self.members]
        )
        scores, spread = each.mean(dim=0), each.std(dim=0, correction=0)
        loss = None
        if labels is not None:
            targets = labels.float().view(-1)
            if self.config.loss == "bce":
                loss = nn.functional.binary_cross_entropy(scores.float().clamp(1e-7, 1 - 1e-7), targets)
            else:
                loss = nn.functional.mse_loss(scores.float(), targets)
        return QueryRewardOutput(loss=loss, logits=scores.unsqueeze(-1), scores=scores, spread=spread)


def reward_models(model: nn.Module) -> list[QueryRewardModel]:
    """The single models inside `model`: itself, or an ensemble's members."""
    return list(model.members) if isinstance(model, QueryRewardEnsemble) else [model]


# Every save_pretrained then writes `auto_map` and copies this code, so the folder loads with trust_remote_code.
QueryRewardModel.register_for_auto_class("AutoModel")
QueryRewardEnsemble.register_for_auto_class("AutoModel")

__all__ = [
    "QueryRewardEnsemble",
    "QueryRewardModel",
    "QueryRewardOutput",
    "RegressionHead",
    "initialize_layer",
    "reward_models",
]
