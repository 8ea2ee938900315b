"""How gameable is the reward? Degenerate rewrites of real well-formed queries, scored as an RL policy would meet them.

A policy trained on this reward will find text that scores high without being a good query. The probe takes real
well-formed test queries (label >= the paper's 0.8), rewrites each in every degenerate family below, and reports
per family the mean score, the share of rewrites that score at least as high as their original, and the worst
cases: once with the model's plain score, and once per reward rule (the guards of `qrm_hf.scoring.reward_rule`). It
also measures what each rule costs on the real test queries (MSE and accuracy of the rewards against labels).
For an ensemble it reports the members' mean spread per family: whether they disagree more on degenerate text
than on real queries, which is what a spread penalty would act on.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from ..metrics import PAPER_THRESHOLD, score_metrics
from ..scoring.reward_rule import RewardRule

FILLER = "and please also tell me everything about it in as much detail as you possibly can thanks"


def _shuffled(query: str, rng: random.Random) -> str:
    words = query.split()
    for _ in range(10):  # a different order, where the query has one
        rng.shuffle(words)
        if " ".join(words) != query or len(set(query.split())) < 2:
            break
    return " ".join(words)


# Each family rewrites one query (with a seeded random generator where it needs one).
FAMILIES: dict[str, Callable[[str, random.Random], str]] = {
    "question words repeated": lambda q, rng: "what how why where " * 3 + q,
    "query repeated twice": lambda q, rng: f"{q} {q}",
    "'?' spam": lambda q, rng: q + " ?" * 8,
    "all caps": lambda q, rng: q.upper(),
    "words shuffled": _shuffled,
    "long filler tail": lambda q, rng: f"{q} {FILLER} {FILLER}",
    "first half only": lambda q, rng: " ".join(q.split()[: max(1, len(q.split()) // 2)]),
    "one generic question": lambda q, rng: "What is it?",
    # The same trick with one placeholder content word: what the content guard cannot tell from a real query.
    "one generic question with a noun": lambda q, rng: "What is the name of it?",
    "empty": lambda q, rng: "",
}

# The rules the probe compares: the model alone, the reward rule with only its empty and length guards, the
# default rule (repetition and content guards on as well), and the default with the prompt guard, each rewrite's
# prompt being the query it rewrote (what a search agent was asked about).
RULES: dict[str, RewardRule | None] = {
    "model score": None,
    "reward rule, empty and length guards only": RewardRule(max_repeated_share=None, min_content_words=0),
    "reward rule (default)": RewardRule(),
    "default + prompt guard 1": RewardRule(min_prompt_overlap=1),
}


@dataclass(frozen=True)
class FamilyResult:
    """One degenerate family under one rule."""

    family: str
    rule: str
    mean: float
    original_mean: float
    share_at_least_original: float
    worst: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class ProbeResult:
    """Every family under every rule, and each rule's cost on the real test queries."""

    n_queries: int
    families: list[FamilyResult]
    rule_cost: dict[str, dict[str, float]]
    # An ensemble's mean spread (members' standard deviation) per family and for the originals; empty otherwise.
    spread: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProbeResult:
        """The result as `to_json` wrote it (probe.json)."""
        families = [FamilyResult(**family) for family in data["families"]]
        return cls(data["n_queries"], families, data.get("rule_cost", {}), data.get("spread", {}))

    def table(self, rule: str) -> list[tuple[str, float, float, float]]:
        """(family, mean, share >= original, original mean) rows of one rule."""
        return [
            (result.family, result.mean, result.share_at_least_original, result.original_mean)
            for result in self.families
            if result.rule == rule
        ]


def well_formed_queries(queries: Sequence[str], labels: Sequence[float], count: int, seed: int = 0) -> list[str]:
    """A seeded random `count` of the queries labelled well-formed (>= 0.8)."""
    chosen = [query for query, label in zip(queries, labels, strict=True) if label >= PAPER_THRESHOLD]
    random.Random(seed).shuffle(chosen)
    return chosen[:count]


def probe(
    score_and_count: Callable[[list[str]], tuple[list[float], list[int]]],
    max_length: int,
    queries: Sequence[str],
    test_queries: Sequence[str] = (),
    test_labels: Sequence[float] = (),
    seed: int = 0,
    worst: int = 3,
    spread: Callable[[list[str]], list[float]] | None = None,
) -> ProbeResult:
    """Score every family's rewrites of `queries` (well-formed ones) under every rule in RULES.

    `score_and_count` gives clamped scores and token counts (`QueryScorer.score` and `token_counts`); `test_queries`
    and `test_labels`, when given, measure what each rule costs on real queries; `spread` (an ensemble's
    `QueryScorer.spread`) gives the members' disagreement per text."""
    rng = random.Random(seed)
    rewrites = {name: [make(query, rng) for query in queries] for name, make in FAMILIES.items()}
    texts = list(dict.fromkeys([*queries, *(text for family in rewrites.values() for text in family)]))
    scores, counts = score_and_count(texts)
    score_of, count_of = dict(zip(texts, scores, strict=True)), dict(zip(texts, counts, strict=True))

    def values_of(rule: RewardRule | None, rewritten: list[str]) -> list[float]:
        prompts = list(queries) if rule is not None and rule.min_prompt_overlap else None
        chosen = [score_of[text] for text in rewritten], [count_of[text] for text in rewritten]
        return rule_values(rule, rewritten, *chosen, max_length, prompts)

    families = []
    for rule_name, rule in RULES.items():
        originals = values_of(rule, list(queries))
        for family, rewritten in rewrites.items():
            values = values_of(rule, rewritten)
            gains = sorted(
                zip(values, originals, queries, rewritten, strict=True),
                key=lambda item: item[0] - item[1],
                reverse=True,
            )
            families.append(
                FamilyResult(
                    family=family,
                    rule=rule_name,
                    mean=sum(values) / len(values),
                    original_mean=sum(originals) / len(originals),
                    share_at_least_original=sum(v >= o for v, o in zip(values, originals, strict=True)) / len(values),
                    worst=[
                        {"original": q, "rewrite": t, "original_value": o, "rewrite_value": v}
                        for v, o, q, t in gains[:worst]
                    ],
                )
            )
    spreads = {}
    if spread is not None:
        by_text = dict(zip(texts, spread(texts), strict=True))
        spreads["original queries"] = sum(by_text[query] for query in queries) / len(queries)
        for family, rewritten in rewrites.items():
            spreads[family] = sum(by_text[text] for text in rewritten) / len(rewritten)
    costs = rule_costs(score_and_count, max_length, test_queries, test_labels)
    return ProbeResult(len(queries), families, costs, spreads)


def rule_values(
    rule: RewardRule | None,
    texts: Sequence[str],
    scores: Sequence[float],
    counts: Sequence[int],
    max_length: int,
    prompts: Sequence[str] | None = None,
) -> list[float]:
    """The value of each text under `rule` (None: the model's score) from its score and token count (and its
    prompt, for the prompt guard)."""
    if rule is None:
        return list(scores)
    stripped = [text.strip() for text in texts]
    written = rule.to_score(stripped)
    chosen = [scores[i] for i in written], [counts[i] for i in written]
    return rule.finish(stripped, written, *chosen, max_length, prompts)


def rule_costs(
    score_and_count: Callable[[list[str]], tuple[list[float], list[int]]],
    max_length: int,
    queries: Sequence[str],
    labels: Sequence[float],
) -> dict[str, dict[str, float]]:
    """MSE and accuracy at 0.8 of each rule's rewards against the labels of real queries: what a guard costs. The
    prompt guard's prompt is the query itself here (a real query asks what it was asked), so it costs nothing."""
    if not queries:
        return {}
    queries = list(queries)
    scores, counts = score_and_count(queries)
    costs = {}
    for name, rule in RULES.items():
        prompts = queries if rule is not None and rule.min_prompt_overlap else None
        metrics = score_metrics(rule_values(rule, queries, scores, counts, max_length, prompts), labels)
        costs[name] = {"mse": metrics["mse"], "accuracy": metrics["accuracy"], "n": len(queries)}
    return costs


def probe_scorer(scorer: Any, queries: Sequence[str], labels: Sequence[float], count: int = 200, seed: int = 0):
    """The probe of a `QueryScorer` on `count` well-formed queries of (queries, labels), with the rules' cost
    measured on all of them."""

    chosen = well_formed_queries(queries, labels, count, seed)
    if not chosen:
        raise ValueError(
            f"the probe rewrites well-formed queries (label >= {PAPER_THRESHOLD}), and none of the {len(queries)} "
            "given is one: give more test queries"
        )
    spread = scorer.spread if getattr(scorer.model.config, "ensemble_size", 1) > 1 else None
    return probe(scorer.score_and_count, scorer.max_length, chosen, queries, labels, seed=seed, spread=spread)


def format_probe(result: ProbeResult) -> list[str]:
    """The probe as Markdown: one table of families x rules, each rule's cost on real queries, the worst cases."""
    rules = list(RULES)
    by_key = {(r.family, r.rule): r for r in result.families}
    any_family = next(iter(FAMILIES))
    lines = [
        "| family | " + " | ".join(f"{rule}: mean (share >= original)" for rule in rules) + " |",
        "|---|" + "---|" * len(rules),
        "| original queries | "
        + " | ".join(f"{by_key[(any_family, rule)].original_mean:.3f}" for rule in rules)
        + " |",
    ]
    for family in FAMILIES:
        cells = [by_key[(family, rule)] for rule in rules]
        lines.append(
            f"| {family} | "
            + " | ".join(f"{cell.mean:.3f} ({100 * cell.share_at_least_original:.0f}%)" for cell in cells)
            + " |"
        )
    lines += [
        "",
        f"{result.n_queries} real well-formed test queries (label >= {PAPER_THRESHOLD}), each rewritten once per "
        "family; under the prompt guard each rewrite's prompt is the query it rewrote.",
        "",
    ]
    if result.rule_cost:
        lines += ["Cost on the real test queries (values against labels):", "", "| rule | MSE | accuracy at 0.8 |"]
        lines.append("|---|---|---|")
        lines += [f"| {name} | {cost['mse']:.4f} | {cost['accuracy']:.4f} |" for name, cost in result.rule_cost.items()]
        lines.append("")
    if result.spread:
        lines += [
            "Ensemble spread (standard deviation of the members' scores), mean per family:",
            "",
            "| family | spread |",
            "|---|---|",
        ]
        lines += [f"| {family} | {value:.4f} |" for family, value in result.spread.items()]
        lines.append("")
    default = "reward rule (default)"
    cases = [
        (family_result.family, family_result.worst[0])
        for family_result in result.families
        if family_result.rule == default
        and family_result.worst
        and family_result.worst[0]["rewrite_value"] >= family_result.worst[0]["original_value"]
    ]
    if cases:
        lines += [f"Rewrites that beat their original most under the {default}:", ""]
        lines += [
            f"- {family}: {case['rewrite'][:90]!r} {case['rewrite_value']:.3f} vs {case['original'][:60]!r} "
            f"{case['original_value']:.3f}"
            for family, case in cases
        ]
        lines.append("")
    return lines


__all__ = [
    "FAMILIES",
    "RULES",
    "FamilyResult",
    "ProbeResult",
    "format_probe",
    "probe",
    "probe_scorer",
    "rule_costs",
    "rule_values",
    "well_formed_queries",
]
