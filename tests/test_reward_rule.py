"""The reward rule on its own: what counts as empty, the guards, and one rule for every caller."""

import pytest

from qrm_hf.scoring.reward_rule import RewardRule, content_words, has_visible_character, repeated_share, without_prompt


def fixed_model(score: float = 0.9, tokens: int = 8):
    """A stand-in for the model's side of the rule: every text scores `score` and has `tokens` tokens."""
    calls: list[list[str]] = []

    def score_and_count(texts):
        calls.append(list(texts))
        return [score] * len(texts), [tokens] * len(texts)

    return score_and_count, calls


@pytest.mark.parametrize("text", ["", "   \n\t", "\u200b", "\u200d\ufeff", "\x00", "\ufffd", "\ud800", " \u2060 "])
def test_text_with_nothing_visible_is_empty_and_never_reaches_the_model(text):
    model, calls = fixed_model()
    assert not has_visible_character(text)
    assert RewardRule(empty_score=-0.5).rewards([text, "owls"], model, max_length=64) == [-0.5, 0.9]
    assert calls == [["owls"]]


def test_empty_score_none_sends_empty_text_to_the_model():
    model, calls = fixed_model(0.23)
    assert RewardRule(empty_score=None).rewards(["", " "], model, max_length=64) == [0.23, 0.23]
    assert calls == [["", ""]]


def test_the_length_guard_scales_text_past_max_length():
    model, _ = fixed_model(0.9, tokens=128)
    assert RewardRule().rewards(["a long one"], model, max_length=64) == pytest.approx([0.45])
    assert RewardRule(length_guard=False).rewards(["a long one"], model, max_length=64) == [0.9]
    exact, _ = fixed_model(0.9, tokens=64)
    assert RewardRule().rewards(["just fits"], exact, max_length=64) == [0.9]


def test_the_repetition_guard_gives_empty_score_to_repeated_words_and_symbols():
    model, _ = fixed_model()
    rule = RewardRule(empty_score=0.1, max_repeated_share=0.35)
    texts = ["how do owls hunt ?", "what what what what is it", "how do owls hunt ? ? ? ? ? ?", "owls owls"]
    assert rule.rewards(texts, model, max_length=64) == [0.9, 0.1, 0.1, 0.1]
    assert repeated_share("The the THE") == pytest.approx(2 / 3)


def test_the_content_guard_gives_empty_score_to_questions_about_nothing():
    model, calls = fixed_model()
    texts = ["What is it?", "who is he ?", "what is the thing", "how do owls hunt ?", "what is 42 ?", "¿qué es?"]
    assert RewardRule(empty_score=0.1).rewards(texts, model, max_length=64) == [0.1, 0.1, 0.1, 0.9, 0.9, 0.9]
    assert RewardRule(min_content_words=0).rewards(texts, model, max_length=64) == [0.9] * 6
    assert RewardRule(min_content_words=2).rewards(["how do owls hunt ?", "what is 42 ?"], model, 64) == [0.9, 0.0]
    assert content_words("What IS the Capital of France?") == ["capital", "france"]


def test_the_prompt_guard_gives_empty_score_to_text_about_another_prompt():
    model, _ = fixed_model()
    rule = RewardRule(empty_score=0.1, min_prompt_overlap=1)
    texts = ["owls hunting at night", "What is the name of it?", "capital of France", ""]
    prompts = ["How do owls hunt?"] * 4
    assert rule.rewards(texts, model, max_length=64, prompts=prompts) == [0.9, 0.1, 0.1, 0.1]
    # Off by default: prompts given or not, the same rewards.
    assert RewardRule().rewards(texts[:3], model, 64, prompts=prompts[:3]) == RewardRule().rewards(texts[:3], model, 64)
    with pytest.raises(ValueError, match="min_prompt_overlap needs the prompts"):
        rule.rewards(texts, model, max_length=64)
    with pytest.raises(ValueError, match="3 prompts for 4 texts"):
        rule.rewards(texts, model, max_length=64, prompts=prompts[:3])
    with pytest.raises(ValueError, match="prompt 1 must be a string"):
        rule.rewards(texts[:2], model, max_length=64, prompts=["owls", None])


def test_the_default_guards_touch_no_query_of_dev_or_test(data_dir):
    """The default rule rewards every real query as the model scores it: no dev or test query repeats over
    0.35 of its words or lacks a content word."""
    rule = RewardRule()
    for split in ("dev", "test"):
        queries = [line.split("\t")[0] for line in (data_dir / f"{split}.tsv").read_text().splitlines()]
        assert len(queries) > 3000
        rewards = rule.rewards(queries, lambda texts: ([0.5] * len(texts), [8] * len(texts)), max_length=64)
        assert rewards == [0.5] * len(queries), split


def test_openrlhf_prompt_stripping_happens_before_the_empty_test():
    model, _ = fixed_model()
    prompt = "<|user|>write a query<|assistant|>"
    texts = [without_prompt(prompt + " \n", prompt), without_prompt(prompt + " owls", prompt), "no prompt"]
    assert RewardRule().rewards(texts, model, max_length=64) == [0.0, 0.9, 0.9]
    assert without_prompt("other text", prompt) == "other text"


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"empty_score": float("nan")}, "empty_score must be a finite number or None"),
        ({"empty_score": True}, "empty_score must be a finite number or None"),
        ({"length_guard": "yes"}, "length_guard must be true or false"),
        ({"max_repeated_share": 1.0}, r"max_repeated_share must be a number in \[0, 1\) or None"),
        ({"min_content_words": -1}, r"min_content_words must be a whole number >= 0"),
        ({"min_content_words": 1.5}, r"min_content_words must be a whole number >= 0"),
        ({"min_content_words": True}, r"min_content_words must be a whole number >= 0"),
        ({"min_prompt_overlap": -2}, r"min_prompt_overlap must be a whole number >= 0"),
    ],
)
def test_bad_rules_are_refused_by_field(values, message):
    with pytest.raises(ValueError, match=message):
        RewardRule(**values)


def test_a_rule_travels_as_json_and_unknown_keys_are_named():
    rule = RewardRule(empty_score=-1.0, length_guard=False, max_repeated_share=0.4, min_content_words=2)
    assert RewardRule.from_dict(rule.to_dict()) == rule
    with pytest.raises(ValueError, match=r"unknown keys \['empty'\]"):
        RewardRule.from_dict({"empty": 0})
    with pytest.raises(ValueError, match="must be an object"):
        RewardRule.from_dict([0.0])


@pytest.mark.parametrize(
    ("disguised", "plain"),
    [
        ("Wh\u200bat is it?", "What is it?"),
        ("wh\u00adere is it", "where is it"),
        ("\uff37\uff48\uff41\uff54 is it?", "What is it?"),
        ("owls\u2060 owls\u200d owls", "owls owls owls"),
        ("\u3164", " "),
        ("how \ufeffdo owls\x00 hunt ?\u2800", "how do owls hunt ? "),
        ("Wh\u034fat i\ufe0fs i\U000e0100t?", "What is it?"),  # combining grapheme joiner, variation selectors
        ("wh\u17b4ere is\u180b it", "where is it"),  # Khmer inherent vowel, Mongolian variation selector
    ],
)
def test_the_guards_read_the_text_as_the_model_reads_it(disguised, plain):
    from qrm_hf.scoring.reward_rule import fold_text
    from qrm_hf.scoring.scorer import normalize_query

    assert fold_text(disguised) == plain
    assert normalize_query(disguised) == (plain if plain.strip() else "")
    model = lambda texts: ([0.9] * len(texts), [5] * len(texts))  # noqa: E731
    rule = RewardRule()
    assert rule.rewards([disguised], model, 64) == rule.rewards([plain], model, 64)
