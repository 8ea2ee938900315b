"""The TRL reward function: plain and conversational completions, its name, and a real GRPOTrainer run."""

from __future__ import annotations

import pytest
from conftest import BATCH_TOLERANCE, tiny_policy

from qrm_hf.scoring.rewards import completion_text, make_reward_function
from qrm_hf.scoring.scorer import QueryScorer

TEXTS = ["how do owls hunt ?", "owls", "what is the capital of france"]


@pytest.fixture(scope="module")
def scorer(saved_model_dir) -> QueryScorer:
    return QueryScorer.from_pretrained(saved_model_dir, device="cpu")


def test_plain_completions_are_scored_stripped_with_any_trl_keyword(scorer):
    reward = make_reward_function(scorer)

    rewards = reward(
        prompts=["p"] * 3,
        completions=[f" {text}\n" for text in TEXTS],
        completion_ids=[[1], [2], [3]],
        trainer_state=None,
        log_extra=lambda *args: None,
    )

    assert rewards == pytest.approx(scorer.score(TEXTS), abs=BATCH_TOLERANCE)


def test_conversational_completions_use_the_last_assistant_message(scorer):
    reward = make_reward_function(scorer)
    completions = [[{"role": "assistant", "content": text}] for text in TEXTS[:2]] + [
        [
            {"role": "assistant", "content": "let me think"},
            {"role": "tool", "content": "owls"},
            {"role": "assistant", "content": [{"type": "text", "text": TEXTS[2]}]},
        ]
    ]

    assert reward(prompts=[[{"role": "user", "content": "p"}]] * 3, completions=completions) == pytest.approx(
        scorer.score(TEXTS), abs=BATCH_TOLERANCE
    )


def test_completion_text_errors_say_what_was_expected():
    with pytest.raises(ValueError, match=r"no assistant message \(roles: \['user'\]\)"):
        completion_text([{"role": "user", "content": "hi"}])
    with pytest.raises(TypeError, match="must be a string or a list of message dicts, got int"):
        completion_text(3)
    assert completion_text([{"role": "assistant", "content": None, "tool_calls": []}]) == ""


def test_reward_function_has_a_name_for_trl_logs(scorer):
    assert make_reward_function(scorer).__name__ == "query_wellformedness"
    assert make_reward_function(scorer, name="wellformed").__name__ == "wellformed"


def test_reward_function_loads_a_folder_and_can_return_raw_scores(saved_model_dir, scorer):
    reward = make_reward_function(saved_model_dir, raw=True, device="cpu")

    assert reward(prompts=["p"] * 3, completions=TEXTS) == pytest.approx(
        scorer.score(TEXTS, raw=True), abs=BATCH_TOLERANCE
    )


@pytest.mark.slow
def test_grpo_trainer_trains_two_steps_with_the_reward(saved_model_dir, minilm_path, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.eos_token = tokenizer.sep_token  # a BERT tokenizer has none; generation needs one to stop on
    policy = tiny_policy(tokenizer.vocab_size, tokenizer.pad_token_id, tokenizer.sep_token_id)
    reward = make_reward_function(saved_model_dir, device="cpu")
    calls: list[tuple[list[str], list[float]]] = []

    def recorded_reward(prompts, completions, **kwargs):
        rewards = reward(prompts, completions, **kwargs)
        calls.append((list(completions), rewards))
        return rewards

    recorded_reward.__name__ = reward.__name__
    prompts = ["rewrite as a query : owls hunt", "rewrite : pizza near me", "rewrite : sky why blue", "fix : flights"]
    args = GRPOConfig(
        output_dir=str(tmp_path),
        per_device_train_batch_size=4,
        num_generations=4,
        max_completion_length=8,
        max_steps=2,
        logging_steps=1,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,
        seed=0,
    )
    trainer = GRPOTrainer(
        model=policy,
        reward_funcs=recorded_reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )

    trainer.train()

    assert trainer.state.global_step == 2
    assert len(calls) == 2
    for completions, rewards in calls:
        assert len(completions) == 4 and all(isinstance(text, str) for text in completions)
        model_scores = reward.scorer.score([text.strip() for text in completions])
        expected = [score if text.strip() else 0.0 for text, score in zip(completions, model_scores, strict=True)]
        assert rewards == pytest.approx(expected, abs=BATCH_TOLERANCE)
    logged = [entry["rewards/query_wellformedness/mean"] for entry in trainer.state.log_history if "reward" in entry]
    assert logged == pytest.approx([sum(rewards) / len(rewards) for _, rewards in calls], abs=1e-5)


@pytest.fixture
def scored(scorer, monkeypatch):
    """The queries the scorer's model is asked to score, call by call (`score` goes through `score_and_count`)."""
    calls: list[list[str]] = []
    score_and_count = scorer.score_and_count

    def recording(queries, *args, **kwargs):
        calls.append(list(queries))
        return score_and_count(queries, *args, **kwargs)

    monkeypatch.setattr(scorer, "score_and_count", recording)
    return calls


def test_empty_completions_get_empty_score_without_running_the_model(scorer, scored):
    reward = make_reward_function(scorer)
    completions = ["", " \n", [{"role": "assistant", "content": None, "tool_calls": []}], "\ufeff", " owls "]

    rewards = reward(prompts=["p"] * 5, completions=completions)

    assert rewards[:4] == [0.0, 0.0, 0.0, 0.0]
    assert scored == [["owls"]]
    assert rewards[4] == pytest.approx(scorer.score(["owls"])[0], abs=BATCH_TOLERANCE)
    scored.clear()
    assert make_reward_function(scorer, empty_score=-1.0)(prompts=["p"], completions=[""]) == [-1.0]
    assert scored == []


def test_empty_score_none_scores_the_empty_string_with_the_model(scorer):
    reward = make_reward_function(scorer, empty_score=None)

    assert reward(prompts=["p"], completions=["  "]) == pytest.approx(scorer.score([""]), abs=BATCH_TOLERANCE)


@pytest.mark.parametrize("empty_score", [float("nan"), "0", True])
def test_empty_score_must_be_a_finite_number(scorer, empty_score):
    with pytest.raises(ValueError, match="empty_score must be a finite number or None"):
        make_reward_function(scorer, empty_score=empty_score)


def test_unreadable_completions_are_scored_as_empty_with_one_warning(scorer, caplog):
    reward = make_reward_function(scorer, empty_score=0.0)
    completions = [
        3,
        None,
        [{"role": "user", "content": "owls"}],
        ["not a message"],
        [{"role": "assistant", "content": 42}],
        {"role": "assistant", "content": "owls"},
    ]

    with caplog.at_level("WARNING", logger="qrm_hf.scoring.rewards"):
        first = reward(prompts=["p"] * 6, completions=completions)
        second = reward(prompts=["p"] * 6, completions=completions)

    assert first == second
    assert first[:5] == [0.0] * 5
    assert first[5] == pytest.approx(
        scorer.score(["owls"])[0], abs=BATCH_TOLERANCE
    )  # a lone message dict is one message
    warnings = [record.getMessage() for record in caplog.records]
    assert len(warnings) == 1
    assert "query_wellformedness: completion 0 cannot be read" in warnings[0] and "scored as empty (0.0)" in warnings[0]


def test_a_completion_with_a_lone_surrogate_is_scored_and_one_with_nothing_visible_is_empty(scorer):
    reward = make_reward_function(scorer, empty_score=-0.5)

    rewards = reward(
        prompts=["p"] * 2, completions=["how do owls hunt \ud800?", [{"role": "assistant", "content": "\udfff"}]]
    )

    assert rewards == pytest.approx([scorer.score(["how do owls hunt \ufffd?"])[0], -0.5], abs=BATCH_TOLERANCE)
    # Zero-width space, NUL, the replacement character, a byte-order mark: nothing written, so empty_score.
    invisible = ["\u200b", "\x00", "\ufffd", "\ufeff", " \u200d\t"]
    assert reward(prompts=["p"] * 5, completions=invisible) == [-0.5] * 5


def test_text_past_max_length_earns_a_fraction_of_its_score(scorer):
    """The model sees only max_length tokens: a good prefix with anything appended must not keep its score."""
    question = "how do owls hunt at night ?"
    padded = question + "".join(f" word{index}" for index in range(300))  # no repeats: the length guard alone
    [tokens] = scorer.token_counts([padded])
    assert tokens > scorer.max_length

    guarded, unguarded = make_reward_function(scorer), make_reward_function(scorer, length_guard=False)

    assert unguarded(prompts=["p"], completions=[padded]) == pytest.approx(scorer.score([padded]), abs=BATCH_TOLERANCE)
    assert guarded(prompts=["p"], completions=[padded]) == pytest.approx(
        [scorer.score([padded])[0] * scorer.max_length / tokens], abs=BATCH_TOLERANCE
    )
    assert guarded(prompts=["p"], completions=[question]) == pytest.approx(
        scorer.score([question]), abs=BATCH_TOLERANCE
    )


def test_chat_content_given_as_a_list_of_strings_is_joined(scorer):
    reward = make_reward_function(scorer)
    completions = [[{"role": "assistant", "content": ["how do ", "owls hunt ?"]}]]

    assert completion_text(completions[0]) == "how do owls hunt ?"
    assert reward(prompts=["p"], completions=completions) == pytest.approx(
        scorer.score(["how do owls hunt ?"]), abs=BATCH_TOLERANCE
    )


def test_completions_that_are_not_a_list_raise_type_error(scorer):
    reward = make_reward_function(scorer)

    with pytest.raises(TypeError, match="completions must be a list, one per generation, got str"):
        reward(prompts=["p"], completions="owls")


def test_reward_function_refuses_incomplete_weights_naming_the_file(saved_model_dir, tmp_path):
    import shutil

    folder = tmp_path / "model"
    shutil.copytree(saved_model_dir, folder)
    (folder / "model.safetensors").write_bytes(b"")

    with pytest.raises(OSError, match=r"model\.safetensors is incomplete or corrupt"):
        make_reward_function(folder, device="cpu")


def test_the_prompt_guard_reads_each_prompt_and_only_a_conversations_user_messages(scorer):
    """With min_prompt_overlap, a completion must share a content word with its prompt: of a chat prompt, the user
    messages count (a system prompt's words would otherwise make any completion relevant)."""
    from qrm_hf.scoring.rewards import prompt_text

    chat = [
        {"role": "system", "content": "You write search queries for a web search engine"},
        {"role": "user", "content": [{"type": "text", "text": "How do owls hunt?"}]},
    ]
    completions = ["how do owls hunt at night ?", "What is the name of it?", "best web search engine queries"]
    guarded = make_reward_function(scorer, min_prompt_overlap=1)(prompts=[chat] * 3, completions=completions)
    plain = make_reward_function(scorer)(prompts=[chat] * 3, completions=completions)
    assert guarded[0] == pytest.approx(plain[0], abs=BATCH_TOLERANCE) and guarded[0] > 0.0
    assert guarded[1:] == [0.0, 0.0] and plain[2] > 0.0
    assert prompt_text(chat) == "How do owls hunt?" and prompt_text("plain prompt") == "plain prompt"
    with pytest.raises(TypeError, match="prompt must be a string or a list of message dicts"):
        prompt_text(42)
