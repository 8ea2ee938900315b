"""One training run's pieces: a point of the space becomes arguments and a model, and the one Trainer."""

import pytest
from datasets import Dataset, DatasetDict
from transformers import AutoModel, AutoTokenizer

from qrm_hf.run.config import RunConfig
from qrm_hf.search.space import SearchSpace
from qrm_hf.training.build import RunBuilder, make_trainer
from qrm_hf.training.trainer import PerTrialEarlyStopping

SPACE = {"learning_rate": {"type": "float", "low": 1e-5, "high": 1e-3, "log": True}, "num_hidden_layers": 0}


@pytest.fixture(scope="module")
def built(tiny_encoder_dir, tmp_path_factory):
    config = RunConfig(
        model=str(tiny_encoder_dir), seed=7, training={"per_device_eval_batch_size": 16, "max_length": 48}
    )
    builder = RunBuilder(config, SearchSpace.from_dict(SPACE).fixed, AutoModel.from_pretrained(tiny_encoder_dir))
    args, model = builder.build({"learning_rate": 3e-4, "max_length": 24}, tmp_path_factory.mktemp("run"))
    return config, args, model


def test_a_points_values_win_over_training_and_the_defaults(built):
    config, args, model = built
    assert args.learning_rate == 3e-4 and args.max_length == 24  # the point
    assert args.per_device_eval_batch_size == 16  # the config's training:
    assert args.seed == config.seed == 7 and args.eval_strategy == "epoch"  # the defaults
    assert model.config.num_hidden_layers == 0 and model.config.max_length == 24


def test_the_trainer_gets_the_collator_of_its_arguments_and_early_stopping(built, tiny_encoder_dir):
    _, args, model = built
    tokenizer = AutoTokenizer.from_pretrained(tiny_encoder_dir)
    rows = Dataset.from_dict({"input_ids": [[1, 5, 2]], "attention_mask": [[1, 1, 1]], "labels": [0.5]})
    data = DatasetDict({"train": rows, "dev": rows})
    trainer = make_trainer(args, tokenizer, data, model=model)
    assert trainer.data_collator.max_length == 24
    # A search's trial sets its own max_length on the arguments; the collator follows them, with no copy to keep.
    trainer.args.max_length = 16
    assert trainer.data_collator.max_length == 16
    trainer.args.max_length = 24
    stoppers = [c for c in trainer.callback_handler.callbacks if isinstance(c, PerTrialEarlyStopping)]
    assert len(stoppers) == 1 and stoppers[0].early_stopping_patience == args.early_stopping_patience
    args.early_stopping_patience = None
    trainer = make_trainer(args, tokenizer, data, model=model)
    assert not any(isinstance(c, PerTrialEarlyStopping) for c in trainer.callback_handler.callbacks)


def test_reinit_top_layers_renews_the_top_blocks_and_keeps_the_rest_pretrained(tiny_encoder_dir, tmp_path):
    """Two blocks in the tiny encoder: re-initialising one changes block 1 only; asking for three is refused."""
    import torch

    encoder = AutoModel.from_pretrained(tiny_encoder_dir)
    config = RunConfig(model=str(tiny_encoder_dir))
    builder = RunBuilder(config, {"num_hidden_layers": 0}, encoder)
    pretrained = {f"encoder.{name}": tensor for name, tensor in encoder.state_dict().items()}

    _, kept = builder.build({}, tmp_path / "a")
    _, renewed = builder.build({"reinit_top_layers": 1}, tmp_path / "b")

    def changed(model):
        return {
            name
            for name, tensor in model.state_dict().items()
            if name in pretrained and not torch.equal(tensor, pretrained[name])
        }

    assert changed(kept) == set()
    assert changed(renewed) and all(".layers.1." in name for name in changed(renewed))
    assert any(name.endswith("layers.1.mlp.Wo.weight") for name in changed(renewed))
    with pytest.raises(ValueError, match="reinit_top_layers=3, but the encoder has 2 blocks"):
        builder.build({"reinit_top_layers": 3}, tmp_path / "c")
