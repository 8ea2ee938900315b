"""qrm_hf: fine-tune a pretrained encoder into a reward model for search-query wellformedness."""

from .configuration_qrm import QueryRewardConfig
from .modeling_qrm import QueryRewardModel, QueryRewardOutput
from .run_config import RunConfig
from .search_space import SearchSpace
from .trainer import QRMTrainer
from .training_args import QRMTrainingArguments

__all__ = [
    "QRMTrainer",
    "QRMTrainingArguments",
    "QueryRewardConfig",
    "QueryRewardModel",
    "QueryRewardOutput",
    "RunConfig",
    "SearchSpace",
]
