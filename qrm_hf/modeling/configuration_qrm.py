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
LOSSES = ("mse", "bce")
# The paper's convention: a query whose mean rating is at least 0.8 counts as well-formed.
PAPER_THRESHOLD = 0.8


def auto_map_for(ensemble_size: int = 1) -> dict[str, str]:
    """The Auto classes a saved folder registers, so that AutoModel and the text-classification pipeline both
    find the reward model (or the ensemble of them) with trust_remote_code."""
    model = "modeling_qrm.QueryRewardModel" if ensemble_size == 1 else "modeling_qrm.QueryRewardEnsemble"
    return {
        "AutoConfig": "configuration_qrm.QueryRewardConfig",
        "AutoModel": model,
        "AutoModelForSequenceClassification": model,
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
        encoder_dropout (`float`, *optional*, defaults to 0): sets every dropout probability of the encoder's
            config (`hidden_dropout_prob` and `attention_probs_dropout_prob` of BERT/MiniLM, `embedding_dropout`,
            `mlp_dropout` and `attention_dropout` of ModernBERT, ...); `None` keeps the encoder's own values.
            Encoder dropout shifts the eval-mode output away from the label mean: MiniLM's 0.1 put a plain
            fine-tune's test predictions +0.088 above the labels (results/BENCHMARKS.md, benchmark 8).
        loss (`str`): `mse` (the head's output is the score) or `bce` (binary cross-entropy on the soft labels;
            the score is the sigmoid of the head's output, so it lies in [0, 1] by construction).
        decision_threshold (`float`): a score at or above it means well-formed (`QueryScorer.classify`); a run
            chooses it on dev, never on test.
        ensemble_size (`int`, *optional*, defaults to 1): members of a [`QueryRewardEnsemble`] (fine-tunes of one
            architecture whose scores are averaged); 1 is a single [`QueryRewardModel`].

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
    encoder_dropout: float | None = 0.0
    loss: str = "mse"
    decision_threshold: float = PAPER_THRESHOLD
    ensemble_size: int = 1

    def __post_init__(self, **kwargs: Any) -> None:
        # A regression output: tooling must not squash it as if it were a class probability.
        kwargs.setdefault("num_labels", 1)
        self.problem_type = "regression"
        if self.id2label is None:
            self.id2label = {0: "wellformedness"}
        if getattr(self, "auto_map", None) is None:
            self.auto_map = auto_map_for(self.ensemble_size)
        super().__post_init__(**kwargs)
        self._validate_head()
        if self.encoder_dropout is not None:
            for name in encoder_dropout_fields(self.encoder):
                setattr(self.encoder, name, float(self.encoder_dropout))

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
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {self.loss!r}")
        if not 0.0 <= self.decision_threshold <= 1.0:
            raise ValueError(f"decision_threshold must be in [0, 1], got {self.decision_threshold}")
        if isinstance(self.ensemble_size, bool) or not isinstance(self.ensemble_size, int) or self.ensemble_size < 1:
            raise ValueError(f"ensemble_size must be an int >= 1, got {self.ensemble_size!r}")
        if self.encoder_dropout is not None:
            if not 0.0 <= self.encoder_dropout < 1.0:
                raise ValueError(f"encoder_dropout must be in [0, 1) or None, got {self.encoder_dropout}")
            if not encoder_dropout_fields(self.encoder):
                raise ValueError(
                    f"encoder_dropout: the {self.encoder.model_type} config has no dropout field to set; "
                    "leave encoder_dropout unset (None)"
                )
        if any(width < 1 for width in self.head_widths()):
            raise ValueError(
                f"hidden_dim_ratio={self.hidden_dim_ratio} with num_hidden_layers={self.num_hidden_layers} "
                f"gives an empty layer for hidden size {self.encoder.hidden_size}: {self.head_widths()}"
            )

    def head_widths(self) -> list[int]:
        """Widths of the head's hidden layers, halving from `hidden_size * hidden_dim_ratio`."""
        hidden = self.encoder.hidden_size
        return [int(hidden * self.hidden_dim_ratio * 0.5**i) for i in range(self.num_hidden_layers)]


def encoder_dropout_fields(encoder: PretrainedConfig) -> list[str]:
    """The encoder config's dropout probabilities that `encoder_dropout` sets: every float field whose name
    holds "dropout", except a classifier's (the bare encoder has no classifier).

    Example:
        >>> from transformers import BertConfig
        >>> encoder_dropout_fields(BertConfig())
        ['attention_probs_dropout_prob', 'hidden_dropout_prob']
    """
    return sorted(
        name
        for name, value in encoder.to_dict().items()
        if "dropout" in name
        and not name.startswith("classifier")
        and isinstance(value, float)
        and not isinstance(value, bool)
    )


QueryRewardConfig.register_for_auto_class()

__all__ = ["LOSSES", "PAPER_THRESHOLD", "QueryRewardConfig", "auto_map_for", "encoder_dropout_fields"]
