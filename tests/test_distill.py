"""`qrm distill`: a student trained on a teacher's scores reproduces them; bad input is refused before training."""

import json
import math

import pytest
import torch

from qrm_hf.distill import DistillConfig, TeacherCache, build_transfer_set, make_rewrites
from qrm_hf.run.config import ConfigError


@pytest.fixture(scope="module")
def teacher_dir(tmp_path_factory, tiny_encoder_config, tokenizer):
    """A tiny bce reward model whose scores sit far below the labels (about 0.12): unlike them, so a student
    that learns the teacher's scores is told apart from one that learns the labels."""
    from qrm_hf import QueryRewardConfig, QueryRewardModel
    from qrm_hf.modeling.model_files import save_reward_model

    torch.manual_seed(1)
    model = QueryRewardModel(
        QueryRewardConfig(encoder=tiny_encoder_config.to_dict(), loss="bce", num_hidden_layers=0, pooling="mean")
    )
    with torch.no_grad():
        model.head.layers[-1].bias.fill_(-2.0)
    return save_reward_model(model, tokenizer, tmp_path_factory.mktemp("teacher"))


def small(tmp_path, teacher_dir, student, data_dir, **values) -> DistillConfig:
    settings = {
        "teacher": str(teacher_dir),
        "student": str(student),
        "data": str(data_dir),
        "output_dir": str(tmp_path / "out"),
        "max_train_samples": 64,
        "max_eval_samples": 32,
        "max_test_samples": 32,
        "learning_rate": 5e-3,
        "num_epochs": 3,
        "batch_size": 16,
        "device": "cpu",
        **values,
    }
    return DistillConfig(**settings)


def test_rewrites_are_seeded_and_never_repeat_a_query_or_each_other():
    queries = ["how do owls hunt ?", "what is the capital of peru ?"]
    first = make_rewrites(queries, 20, ["all caps", "words shuffled", "'?' spam"], seed=3)
    assert first == make_rewrites(queries, 20, ["all caps", "words shuffled", "'?' spam"], seed=3)
    texts = [text for _, text in first]
    assert len(texts) == len(set(texts)) and not set(texts) & set(queries)
    assert "HOW DO OWLS HUNT ?" in texts


def test_targets_mix_label_and_teacher_on_labelled_rows_and_take_the_teacher_on_rewrites():
    config = DistillConfig(teacher="t", label_weight=0.25, rewrites_per_query=1.0, rewrite_families=["all caps"])
    transfer = build_transfer_set(
        ["how do owls hunt ?", "owls hunt"], [1.0, 0.0], lambda texts: [0.5] * len(texts), config
    )
    assert transfer.texts[:2] == ["how do owls hunt ?", "owls hunt"]
    assert transfer.targets[:2] == [pytest.approx(0.25 * 1.0 + 0.75 * 0.5), pytest.approx(0.75 * 0.5)]
    assert all(target == 0.5 for target in transfer.targets[2:]) and transfer.labels[2:] == [None] * (
        len(transfer.texts) - 2
    )
    assert transfer.sources["training queries"] == 2 and transfer.sources["all caps"] == len(transfer.texts) - 2
    with pytest.raises(ValueError, match="the teacher scored 1 texts as NaN"):
        build_transfer_set(["a b", "c d"], [1.0, 0.0], lambda texts: [math.nan] + [0.5] * (len(texts) - 1), config)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"label_weight": 1.5}, r"label_weight must be in \[0.0, 1.0\], got 1.5"),
        ({"label_weight": math.nan}, "label_weight must be a finite number"),
        ({"rewrites_per_query": -1.0}, r"rewrites_per_query must be in \[0.0, inf\)"),
        ({"learning_rate": 0.0}, r"learning_rate must be in \(0.0, inf\)"),
        ({"num_epochs": 0}, r"num_epochs must be in \[1, inf\)"),
        ({"rewrite_families": ["all caps", "emoji"]}, r"rewrite_families: unknown \['emoji'\]"),
    ],
)
def test_out_of_domain_settings_are_refused_naming_the_setting(values, message):
    with pytest.raises(ConfigError, match=message):
        DistillConfig(teacher="t", **values)


@pytest.mark.slow
def test_a_distilled_student_reproduces_its_teacher_better_than_a_label_trained_one(
    teacher_dir, tiny_encoder_dir, data_dir, tmp_path
):
    from qrm_hf.data import load_splits
    from qrm_hf.distill import distill
    from qrm_hf.scoring.scorer import QueryScorer

    config = small(tmp_path, teacher_dir, tiny_encoder_dir, data_dir, label_weight=0.0, label_baseline=True)
    result = distill(config)

    dev = list(load_splits(str(data_dir), max_eval_samples=32)["dev"]["query"])
    teacher = QueryScorer.from_pretrained(teacher_dir, device="cpu").score(dev)
    student = QueryScorer.from_pretrained(result.student_dir, device="cpu").score(dev)

    # The same student trained on the labels alone (label_baseline), saved beside it.
    baseline = QueryScorer.from_pretrained(tmp_path / "out" / "label_baseline", device="cpu").score(dev)

    def distance(scores):
        return sum((a - b) ** 2 for a, b in zip(scores, teacher, strict=True)) / len(teacher)

    assert distance(student) < distance(baseline)
    summary = json.loads((tmp_path / "out" / "distill.json").read_text())
    assert summary["transfer_set"]["training queries"] == 64 and sum(summary["transfer_set"].values()) > 64
    assert summary["label_baseline_test"]["n"] == summary["student_test"]["n"] == summary["teacher_test"]["n"] == 32
    card = (result.student_dir / "README.md").read_text()
    assert "## Distillation" in card and f"Distilled from the reward model `{teacher_dir}`" in card
    assert "| teacher |" in card and "| the same student trained on the labels alone |" in card
    assert sorted(path.name for path in (tmp_path / "out").iterdir()) == [
        "distill.json", "label_baseline", "student", "teacher_scores.json",
    ]  # fmt: skip


@pytest.fixture
def wrong_vocabulary_encoder(tmp_path, tokenizer):
    """An encoder whose vocabulary (64 entries) is far smaller than its tokenizer's."""
    from transformers import ModernBertConfig, ModernBertModel

    folder = tmp_path / "small-vocab"
    config = ModernBertConfig(
        vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
        pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2,
    )  # fmt: skip
    ModernBertModel(config).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("teacher is an encoder", r"--teacher .*: .*not a query reward model|--teacher .*model_type"),
        ("student is a reward model", "--student .* is a saved query reward model, not an encoder"),
        ("tokenizer cannot read the data", "--student .* tokenizer produces token id .* vocabulary has 64 entries"),
        ("output under a file", "--output-dir .*: cannot write there"),
        ("student exists", "exists already; pass --force"),
    ],
)
def test_bad_input_exits_2_before_training_and_writes_nothing(
    case, message, teacher_dir, tiny_encoder_dir, saved_model_dir, wrong_vocabulary_encoder, data_dir, tmp_path, capsys
):
    from qrm_hf.commands import main

    teacher, student, output = teacher_dir, tiny_encoder_dir, tmp_path / "out"
    if case == "teacher is an encoder":
        teacher = tiny_encoder_dir
    elif case == "student is a reward model":
        student = saved_model_dir
    elif case == "tokenizer cannot read the data":
        student = wrong_vocabulary_encoder
    elif case == "output under a file":
        (tmp_path / "file").write_text("x")
        output = tmp_path / "file" / "out"
    elif case == "student exists":
        (output / "student").mkdir(parents=True)
    argv = ["distill", "--teacher", str(teacher), "--student", str(student), "--data", str(data_dir)]
    code = main([*argv, "--output-dir", str(output), "--max-train-samples", "16", "--device", "cpu"])
    assert code == 2
    assert __import__("re").search(message, capsys.readouterr().err)
    if case == "student exists":
        assert sorted(path.name for path in output.iterdir()) == ["student"]
    elif case != "output under a file":
        assert not output.exists()


def test_distill_help_lists_its_settings(capsys):
    from qrm_hf.commands import main

    with pytest.raises(SystemExit) as exit_info:
        main(["distill", "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for flag in ("--teacher", "--student", "--label_weight", "--rewrites_per_query", "--label_baseline"):
        assert flag in out


def test_the_teacher_cache_scores_each_text_once_and_ignores_another_teachers_file(tmp_path):
    asked = []

    def score(texts):
        asked.append(list(texts))
        return [len(text) / 100 for text in texts]

    path = tmp_path / "teacher_scores.json"
    assert TeacherCache(path, "teacher-a").scored(["ab", "abc", "ab"], score) == [0.02, 0.03, 0.02]
    assert TeacherCache(path, "teacher-a").scored(["abc", "abcd"], score) == [0.03, 0.04]
    assert asked == [["ab", "abc"], ["abcd"]]
    assert TeacherCache(path, "teacher-b").scored(["ab"], score) == [0.02] and asked[-1] == ["ab"]
    path.write_text("{not json")
    assert TeacherCache(path, "teacher-a").scores == {}


def test_a_student_that_diverges_exits_1_and_saves_nothing(teacher_dir, tiny_encoder_dir, data_dir, tmp_path, capsys):
    from qrm_hf.commands import main

    argv = ["distill", "--teacher", str(teacher_dir), "--student", str(tiny_encoder_dir), "--data", str(data_dir)]
    argv += ["--output-dir", str(tmp_path / "out"), "--max-train-samples", "32", "--max-eval-samples", "16"]
    argv += ["--max-test-samples", "16", "--num-epochs", "1", "--learning-rate", "1e300", "--device", "cpu"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "error: the student: " in err and "diverged" in err and "Traceback" not in err
    assert not (tmp_path / "out" / "student").exists()
