"""The hackability probe: families of degenerate rewrites, scored per rule, and what each rule costs."""

import pytest

from qrm_hf.reporting.probe import FAMILIES, RULES, ProbeResult, format_probe, probe, rule_costs, well_formed_queries

QUERIES = ["how do owls hunt ?", "what is the capital of france ?", "why is the sky blue ?"]


def length_model(texts):
    """A model that likes long text: the score grows with the word count; tokens are words + 2."""
    return [min(1.0, len(text.split()) / 20) for text in texts], [len(text.split()) + 2 for text in texts]


def test_every_family_is_scored_under_every_rule_against_its_original():
    result = probe(length_model, max_length=16, queries=QUERIES)
    assert {(r.family, r.rule) for r in result.families} == {(f, r) for f in FAMILIES for r in RULES}
    by_key = {(r.family, r.rule): r for r in result.families}
    # The model alone pays for repeating the query; the length guard does not stop that (the text fits
    # max_length), the default rule's repetition guard does.
    assert by_key[("query repeated twice", "model score")].share_at_least_original == 1.0
    assert by_key[("query repeated twice", "reward rule, empty and length guards only")].mean > 0.0
    assert by_key[("query repeated twice", "reward rule (default)")].mean == 0.0
    # "What is it?" asks for nothing: the content guard gives it empty_score; a placeholder noun gets past it.
    assert by_key[("one generic question", "reward rule, empty and length guards only")].mean > 0.0
    assert by_key[("one generic question", "reward rule (default)")].mean == 0.0
    assert by_key[("one generic question with a noun", "reward rule (default)")].mean > 0.0
    # The empty string: the model's own score (0 here) under the model, empty_score (0) under the rules.
    assert by_key[("empty", "reward rule (default)")].mean == 0.0
    # A long filler tail runs past max_length: the length guard scales it down.
    tail = by_key[("long filler tail", "model score")], by_key[("long filler tail", "reward rule (default)")]
    assert tail[1].mean < tail[0].mean
    worst = by_key[("'?' spam", "model score")].worst[0]
    assert worst["rewrite"].endswith("? ? ?") and worst["rewrite_value"] > worst["original_value"]


def test_rule_costs_measure_each_rule_on_real_queries():
    costs = rule_costs(length_model, 64, QUERIES, [1.0, 1.0, 1.0])
    assert set(costs) == set(RULES)
    assert costs["model score"]["mse"] == pytest.approx(costs["reward rule (default)"]["mse"])
    assert all(cost["n"] == 3 for cost in costs.values())


def test_well_formed_queries_are_a_seeded_sample_of_the_labelled_ones():
    queries, labels = ["a", "b", "c", "d"], [0.8, 0.6, 1.0, 0.2]
    chosen = well_formed_queries(queries, labels, count=5, seed=1)
    assert sorted(chosen) == ["a", "c"] and chosen == well_formed_queries(queries, labels, count=5, seed=1)


def test_the_probe_round_trips_through_json_and_prints_one_row_per_family():
    result = probe(length_model, 16, QUERIES, QUERIES, [1.0, 0.8, 0.6])
    again = ProbeResult.from_json(result.to_json())
    assert again == result
    text = "\n".join(format_probe(again))
    for family in FAMILIES:
        assert f"| {family} |" in text
    assert "| original queries |" in text and "Cost on the real test queries" in text


def test_an_ensembles_spread_is_reported_per_family():
    """A spread that grows with the word count: the long rewrites show more disagreement than the originals."""

    def spread(texts):
        return [len(text.split()) / 100 for text in texts]

    result = probe(length_model, 16, QUERIES, spread=spread)
    assert set(result.spread) == {"original queries", *FAMILIES}
    assert result.spread["original queries"] == pytest.approx(sum(len(q.split()) for q in QUERIES) / 300)
    assert result.spread["long filler tail"] > result.spread["original queries"] > result.spread["empty"] == 0.0
    assert ProbeResult.from_json(result.to_json()) == result
    assert "| long filler tail | " in "\n".join(format_probe(result)).split("Ensemble spread")[1]
    assert probe(length_model, 16, QUERIES).spread == {}


def test_probe_scorer_measures_the_spread_of_an_ensemble_only(make_tiny_model, tokenizer):
    from qrm_hf.modeling.modeling_qrm import QueryRewardEnsemble
    from qrm_hf.reporting.probe import probe_scorer
    from qrm_hf.scoring.scorer import QueryScorer

    queries, labels = [*QUERIES, "owls"], [1.0, 0.8, 1.0, 0.0]
    single = QueryScorer(make_tiny_model().eval(), tokenizer)
    ensemble = QueryScorer(QueryRewardEnsemble.from_members([make_tiny_model(seed=s) for s in (0, 1)]), tokenizer)

    assert probe_scorer(single, queries, labels).spread == {}
    assert single.spread(queries) == [0.0] * 4
    spread = probe_scorer(ensemble, queries, labels).spread
    assert spread and all(value >= 0.0 for value in spread.values()) and spread["original queries"] > 0.0
    assert len(ensemble.spread(queries)) == 4
