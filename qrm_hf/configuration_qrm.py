"""Configuration of the query reward model: an encoder config plus the regression head's shape.

The encoder's full config is stored inside this one, so a saved reward model reloads without the base
encoder's repository. This file imports only `transformers` so that `trust_remote_code` can load it.
"""

from __future__ import annotations

from typing import Any, ClassVar

from transformers import AutoConfig, PretrainedConfig
from transformers.configuration_utils import SubConfigSpec

ACTIVATIONS = ("relu", "gelu", "tanh", "leaky_relu")
POOLINGS = ("cls", "mean")

# The Auto classes a saved folder registers, so that AutoModel and the text-classification pipeline
# both find the reward model with trust_remote_code.
AUTO_MAP = {
    "AutoConfig": "configuration_qrm.QueryRewardConfig",
    "AutoModel": "modeling_qrm.QueryRewardModel",
    "AutoModelForSequenceClassification": "modeling_qrm.QueryRewardModel",
}


class QueryRewardConfig(PretrainedConfig):
    r"""Configuration of [`QueryRewardModel`].

    Args:
        encoder (`dict` or `PretrainedConfig`): config of the encoder (any `AutoModel` encoder).
        dropout (`float`): dropout on the pooled encoder output and after each hidden layer of the head.
        num_hidden_layers (`int`): number of Linear -> [LayerNorm] -> activation -> Dropout blocks.
        hidden_dim_ratio (`float`): width of block `i` is `int(H * hidden_dim_ratio * 0.5**i)`,
            `H` the encoder's hidden size.
        activation (`str`): one of `relu`, `gelu`, `tanh`, `leaky_relu`.
        use_layer_norm (`bool`): LayerNorm between each Linear and its activation.
        pooling (`str`): `cls` (first token) or `mean` (mean over non-padding tokens).
        max_length (`int`): the longest input, in tokens, the model was trained with.

    Example:
        >>> from transformers import BertConfig
        >>> config = QueryRewardConfig(encoder=BertConfig(hidden_size=64), num_hidden_layers=2)
        >>> config.head_widths()
        [24, 12]
    """

    model_type = "query_reward"
    sub_configs_defaults: ClassVar[dict[str, SubConfigSpec]] = {
        "encoder": SubConfigSpec(config_class=AutoConfig, model_type="modernbert"),
    }

    encoder: PretrainedConfig | dict | None = None
    dropout: float = 0.1
    num_hidden_layers: int = 1
    hidden_dim_ratio: float = 0.5
    activation: str = "gelu"
    use_layer_norm: bool = True
    pooling: str = "cls"
    max_length: int = 128

    def __post_init__(self, **kwargs: Any) -> None:
        # A regression output: tooling must not squash it as if it were a class probability.
        kwargs.setdefault("num_labels", 1)
        self.problem_type = "regression"
        if self.id2label is None:
            self.id2label = {0: "wellformedness"}
        if getattr(self, "auto_map", None) is None:
            self.auto_map = dict(AUTO_MAP)
        super().__post_init__(**kwargs)
        self._validate_head()

    def _validate_head(self) -> None:
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_hidden_layers < 0:
            raise ValueError(f"num_hidden_layers must be >= 0, got {self.num_hidden_layers}")
        if self.hidden_dim_ratio <= 0:
            raise ValueError(f"hidden_dim_ratio must be > 0, got {self.hidden_dim_ratio}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {ACTIVATIONS}, got {self.activation!r}")
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling must be one of {POOLINGS}, got {self.pooling!r}")
        if self.max_length < 1:
            raise ValueError(f"max_length must be >= 1, got {self.max_length}")
        if any(width < 1 for width in self.head_widths()):
            raise ValueError(
                f"hidden_dim_ratio={self.hidden_dim_ratio} with num_hidden_layers={self.num_hidden_layers} "
                f"gives an empty layer for hidden size {self.encoder.hidden_size}: {self.head_widths()}"
            )

    def head_widths(self) -> list[int]:
        """Widths of the head's hidden layers, halving from `hidden_size * hidden_dim_ratio`."""
        hidden = self.encoder.hidden_size
        return [int(hidden * self.hidden_dim_ratio * 0.5**i) for i in range(self.num_hidden_layers)]


QueryRewardConfig.register_for_auto_class()

__all__ = ["QueryRewardConfig"]
