"""Reward objects RL frameworks expect: a picklable class, an async form, queries inside tool calls, and raw policy
text with its chat-template and special tokens, from TRL's and OpenRLHF's own code paths."""

from __future__ import annotations

import asyncio
import pickle

import pytest
from conftest import BATCH_TOLERANCE, tiny_policy

from qrm_hf.scoring.policy_text import PolicyTextCleaner, tool_call_queries
from qrm_hf.scoring.rewards import AsyncQueryReward, QueryReward, make_reward_function
from qrm_hf.scoring.scorer import QueryScorer

QUERY = "how do owls hunt at night ?"


@pytest.fixture(scope="module")
def scorer(saved_model_dir) -> QueryScorer:
    return QueryScorer.from_pretrained(saved_model_dir, device="cpu")


@pytest.fixture(scope="module")
def server_url_and_scorer(saved_model_dir, scorer, tmp_path_factory):
    """`qrm serve` on the tiny model, with its default /get_reward settings."""
    from test_serve import running_server

    with running_server(saved_model_dir, tmp_path_factory.mktemp("serve") / "server.log") as (url, _):
        yield url, scorer


@pytest.mark.parametrize(
    "raw",
    [
        f"{QUERY}<|im_end|>",
        f"{QUERY}<|im_end|>\n<|endoftext|><|endoftext|><|endoftext|>",
        f"<|im_start|>system\nYou search.<|im_end|>\n<|im_start|>user\nowls?<|im_end|>\n<|im_start|>assistant\n{QUERY}",
        f"<|im_start|> user owls? <|im_end|> <|im_start|> assistant {QUERY} <|im_end|> [PAD] [PAD]",
        f"<|start_header_id|>assistant<|end_header_id|>\n\n{QUERY}<|eot_id|><|finetune_right_pad_id|>",
        f"<start_of_turn>model\n{QUERY}<end_of_turn>\n<eos><pad><pad>",
        f"<s>[INST] owls? [/INST] {QUERY}</s>",
        f"<|assistant|>\n{QUERY}<|end|>\n<|endoftext|>",
    ],
)
def test_the_cleaner_keeps_the_response_alone_across_chat_templates(raw):
    assert PolicyTextCleaner().clean(raw) == QUERY


def test_a_policy_tokenizers_own_special_tokens_are_removed_and_its_eos_ends_the_turn(tokenizer):
    policy = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    policy.add_special_tokens({"additional_special_tokens": ["<|my_tool_marker|>"], "eos_token": "<|stop_here|>"})
    cleaner = PolicyTextCleaner.from_tokenizer(policy)
    assert cleaner.clean(f"<|my_tool_marker|>{QUERY}<|stop_here|> trailing junk") == QUERY
    assert PolicyTextCleaner().clean(f"{QUERY}<|stop_here|>") == f"{QUERY}<|stop_here|>"  # unknown without it
    assert PolicyTextCleaner().clean("what is a < b in python [3.12]") == "what is a < b in python [3.12]"


def test_a_response_with_end_and_padding_tokens_earns_the_response_reward(scorer):
    reward = QueryReward(scorer)
    alone = reward(prompts=["p"], completions=[QUERY])
    padded = [f"{QUERY}<|im_end|>", f"{QUERY}<|im_end|><|endoftext|><|endoftext|>", f" {QUERY}</s><pad><pad>"]
    assert reward(prompts=["p"] * 3, completions=padded) == pytest.approx(alone * 3, abs=BATCH_TOLERANCE)
    raw = QueryReward(scorer, strip_policy_tokens=False)(prompts=["p"], completions=padded[1:2])
    assert raw != pytest.approx(alone, abs=BATCH_TOLERANCE)  # what the model says of the text with the tokens


def tool_call(query: str | None = None, name: str = "search", **arguments) -> dict:
    if query is not None:
        arguments["query"] = query
    return {"type": "function", "function": {"name": name, "arguments": arguments}}


def test_the_query_inside_a_tool_call_is_what_gets_scored(scorer):
    reward = QueryReward(scorer)
    expected = {
        text: score for text, score in zip(["owls hunt", QUERY], scorer.score(["owls hunt", QUERY]), strict=True)
    }
    completions = [
        # TRL's parsed tool call: the assistant message has no text, only the call.
        [{"role": "assistant", "content": "", "tool_calls": [tool_call(QUERY)]}],
        # Two searches, then the answer: the queries are judged, not the answer.
        [
            {"role": "assistant", "content": "", "tool_calls": [tool_call(QUERY), tool_call("owls hunt")]},
            {"role": "tool", "name": "search", "content": "Owls hunt at night."},
            {"role": "assistant", "content": "They hunt at night."},
        ],
        # Arguments as JSON text, and a raw-text tool call in the Hermes/Qwen format.
        [{"role": "assistant", "tool_calls": [{"function": {"name": "s", "arguments": '{"query": "owls hunt"}'}}]}],
        f'<tool_call>\n{{"name": "search", "arguments": {{"query": "{QUERY}"}}}}\n</tool_call><|im_end|>',
        # A call without a query argument: the text is judged as before.
        [{"role": "assistant", "content": QUERY, "tool_calls": [tool_call(name="calculator", expression="1+1")]}],
    ]  # fmt: skip
    rewards = reward(prompts=["p"] * 5, completions=completions)
    mean = (expected[QUERY] + expected["owls hunt"]) / 2
    assert rewards == pytest.approx(
        [expected[QUERY], mean, expected["owls hunt"], expected[QUERY], expected[QUERY]], abs=BATCH_TOLERANCE
    )
    worst = QueryReward(scorer, tool_combine="min")(prompts=["p"], completions=completions[1:2])
    assert worst == pytest.approx([min(expected.values())], abs=BATCH_TOLERANCE)
    named = QueryReward(scorer, tool_arguments=("q", "search_query"))
    assert named(
        prompts=["p"], completions=[[{"role": "assistant", "tool_calls": [tool_call(name="s", q=QUERY)]}]]
    ) == (pytest.approx([expected[QUERY]], abs=BATCH_TOLERANCE))
    assert tool_call_queries("<tool_call>not json</tool_call>", ["query"]) == []
    # A block nested past what the JSON decoder reads is skipped as unreadable; the readable one still counts.
    deep = '<tool_call>{"name": "search", "arguments": ' + "[" * 100_000 + "]" * 100_000 + "}</tool_call>"
    readable = '<tool_call>{"name": "search", "arguments": {"query": "owls"}}</tool_call>'
    assert tool_call_queries(deep + readable, ["query"]) == ["owls"]
    assert tool_call_queries('<tool_call>{"arguments": "' + "[" * 100_000 + '"}</tool_call>', ["query"]) == []


def test_the_reward_pickles_and_loads_its_model_again_where_it_lands(saved_model_dir, scorer):
    reward = QueryReward(saved_model_dir, name="wellformed", device="cpu", tool_combine="min")
    copy = pickle.loads(pickle.dumps(reward))
    assert copy.__name__ == "wellformed" and copy.tool_combine == "min" and copy._scorer is None
    assert copy(prompts=["p"], completions=[QUERY]) == pytest.approx(
        reward(prompts=["p"], completions=[QUERY]), abs=BATCH_TOLERANCE
    )
    # A given scorer object travels with it; the old function API gives the same class.
    assert pickle.loads(pickle.dumps(QueryReward(scorer)))(prompts=["p"], completions=[QUERY]) == pytest.approx(
        scorer.score([QUERY]), abs=BATCH_TOLERANCE
    )
    assert isinstance(make_reward_function(scorer), QueryReward)
    with pytest.raises(ValueError, match=r"tool_combine must be one of \['max', 'mean', 'min'\], got 'median'"):
        QueryReward(scorer, tool_combine="median")


def test_the_async_reward_is_a_coroutine_that_trl_runs_concurrently(scorer):
    from trl.trainer.utils import get_callable_name, is_async_callable

    reward = AsyncQueryReward(scorer, name="async_wellformed")
    assert is_async_callable(reward) and not is_async_callable(QueryReward(scorer))
    assert get_callable_name(reward) == "async_wellformed"

    async def both():
        return await asyncio.gather(
            reward(prompts=["p"], completions=[QUERY]), reward(prompts=["p"], completions=["owls"])
        )

    first, second = asyncio.run(both())
    assert first + second == pytest.approx(scorer.score([QUERY, "owls"]), abs=BATCH_TOLERANCE)


@pytest.mark.slow
def test_openrlhfs_own_remote_reward_client_gets_the_response_reward(server_url_and_scorer, tokenizer):
    """OpenRLHF 0.11.2's SingleTurnAgentExecutor, unchanged: it decodes prompt + response with the policy's
    special tokens kept and posts them to /get_reward. The response followed by its end and padding tokens must
    earn the reward of the response alone."""
    from types import SimpleNamespace

    from openrlhf.utils.agent import SingleTurnAgentExecutor

    url, served = server_url_and_scorer
    policy = tokenizer.__class__.from_pretrained(tokenizer.name_or_path)
    policy.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>", "<|endoftext|>"]})
    end, pad = policy.convert_tokens_to_ids("<|im_end|>"), policy.convert_tokens_to_ids("<|endoftext|>")
    response_ids = policy(QUERY, add_special_tokens=False)["input_ids"]

    class Engine:  # stands in for vLLM: one fixed generation
        async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
            output = SimpleNamespace(token_ids=[*response_ids, end, pad, pad], finish_reason="stop", logprobs=None)
            return SimpleNamespace(outputs=[output])

    prompt = "<|im_start|>user\nwrite a search query about owls<|im_end|>\n<|im_start|>assistant\n"
    executor = SingleTurnAgentExecutor(remote_rm_url=f"{url}/get_reward")
    sampling = SimpleNamespace(max_tokens=32, logprobs=None)
    output = asyncio.run(executor.execute(prompt, "label", sampling, 128, policy, Engine()))

    response = policy.decode(response_ids)
    assert output["reward"] == pytest.approx(served.score([response]), abs=BATCH_TOLERANCE)
    # What the client sent held the template, the end token and the padding: the reward is of the response alone.
    sent = policy.decode(output["observation_tokens"], skip_special_tokens=False)
    assert sent.count("<|im_start|>") == 2 and sent.count("<|im_end|>") == 2 and sent.count("<|endoftext|>") == 2


@pytest.mark.slow
def test_an_async_reward_runs_in_a_real_grpo_trainer(saved_model_dir, minilm_path, tmp_path):
    from datasets import Dataset
    from transformers import AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = AutoTokenizer.from_pretrained(minilm_path)
    tokenizer.eos_token = tokenizer.sep_token
    policy = tiny_policy(tokenizer.vocab_size, tokenizer.pad_token_id, tokenizer.sep_token_id)
    reward = AsyncQueryReward(saved_model_dir, name="async_wellformed", device="cpu")
    seen: list[list[str]] = []

    class Recorded(AsyncQueryReward):
        async def __call__(self, prompts=None, completions=None, **kwargs):
            seen.append(list(completions))
            return await super().__call__(prompts, completions, **kwargs)

    recorded = Recorded(reward.scorer, name="async_wellformed")
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=4, num_generations=4, max_completion_length=8,
        max_steps=1, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
    )  # fmt: skip
    prompts = ["rewrite as a query : owls hunt", "rewrite : pizza near me", "rewrite : sky why blue", "fix : flights"]
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[recorded], args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer,
    )  # fmt: skip
    trainer.train()

    assert trainer.state.global_step == 1 and len(seen) == 1 and len(seen[0]) == 4
    expected = reward(prompts=prompts[:1] * 4, completions=seen[0])
    logged = [entry["rewards/async_wellformed/mean"] for entry in trainer.state.log_history if "loss" in entry]
    assert logged == pytest.approx([sum(asyncio.run(expected)) / 4], abs=1e-5)


def test_verls_compute_score_loads_the_model_from_the_environment(saved_model_dir, scorer, monkeypatch):
    import importlib.util

    from qrm_hf import verl_reward  # only to find its file

    # As verl loads it: the file by path, outside its package, the function by name.
    spec = importlib.util.spec_from_file_location("custom_module", verl_reward.__file__)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.delenv("QRM_REWARD_MODEL", raising=False)
    with pytest.raises(RuntimeError, match="QRM_REWARD_MODEL is not set"):
        module.compute_score("wellformed", QUERY, None, {})
    monkeypatch.setenv("QRM_REWARD_MODEL", str(saved_model_dir))
    one = module.compute_score(data_source="wellformed", solution_str=f"{QUERY}<|im_end|>", ground_truth=None)
    batch = module.compute_score_batch(["a", "b"], [QUERY, "owls"], [None, None], [{"prompt": "p"}, None])
    assert one == pytest.approx(scorer.score([QUERY])[0], abs=BATCH_TOLERANCE)
    assert batch == pytest.approx(scorer.score([QUERY, "owls"]), abs=BATCH_TOLERANCE)


def search(query: str) -> str:
    """Search the web.

    Args:
        query: What to search for.
    """
    return "Owls hunt at night, by sound."


def byte_level_chatml_tokenizer():
    """A small byte-level BPE tokenizer (it decodes exactly what it encodes, as Qwen's does) with Qwen3's chat
    template, so TRL parses the policy's tool calls as it does Qwen3's."""
    from importlib.resources import files

    from tokenizers import ByteLevelBPETokenizer
    from transformers import PreTrainedTokenizerFast

    corpus = ["how do owls hunt at night ?", '{"name": "search", "arguments": {"query": "owls"}}', "system user tool"]
    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(corpus * 10, vocab_size=300, min_frequency=1, special_tokens=["<|endoftext|>"])
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=bpe._tokenizer, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", "<|im_end|>"]})
    tokenizer.add_tokens(["<tool_call>", "</tool_call>", "<tool_response>", "</tool_response>", "<think>", "</think>"])
    tokenizer.chat_template = (files("trl") / "chat_templates" / "qwen3.jinja").read_text()
    return tokenizer


@pytest.mark.slow
def test_a_grpo_step_with_a_tool_calling_policy_rewards_the_query_in_its_tool_call(saved_model_dir, scorer, tmp_path):
    import torch
    from datasets import Dataset
    from transformers import Qwen2ForCausalLM
    from trl import GRPOConfig, GRPOTrainer

    tokenizer = byte_level_chatml_tokenizer()
    call = (
        '<tool_call>\n{"name": "search", "arguments": {"query": "how do owls hunt at night ?"}}\n</tool_call><|im_end|>'
    )
    written = tokenizer(call, add_special_tokens=False)["input_ids"]

    class ToolCallingPolicy(Qwen2ForCausalLM):
        """A tiny random policy whose sampling always writes the same search call (its log-probabilities, which
        GRPO trains, are its own)."""

        def generate(self, input_ids=None, attention_mask=None, **kwargs):
            completion = torch.tensor([written] * input_ids.shape[0], device=input_ids.device)
            return torch.cat([input_ids, completion], dim=1)

    policy = tiny_policy(len(tokenizer), tokenizer.pad_token_id, tokenizer.eos_token_id, 4096, ToolCallingPolicy)
    seen: list[list] = []

    class Recorded(QueryReward):
        def __call__(self, prompts=None, completions=None, **kwargs):
            seen.append(list(completions))
            return super().__call__(prompts, completions, **kwargs)

    reward = Recorded(scorer, name="query_in_tool_call")
    args = GRPOConfig(
        output_dir=str(tmp_path), per_device_train_batch_size=2, num_generations=2, max_completion_length=512,
        max_steps=1, logging_steps=1, report_to="none", save_strategy="no", use_cpu=True, bf16=False, seed=0,
        max_tool_calling_iterations=1,
    )  # fmt: skip
    prompts = [[{"role": "user", "content": "How do owls hunt?"}], [{"role": "user", "content": "Owls and night?"}]]
    trainer = GRPOTrainer(
        model=policy, reward_funcs=[reward], args=args, train_dataset=Dataset.from_dict({"prompt": prompts}),
        processing_class=tokenizer, tools=[search],
    )  # fmt: skip
    trainer.train()

    assert trainer.state.global_step == 1 and seen
    completions = seen[0]
    calls = [message for completion in completions for message in completion if message.get("tool_calls")]
    assert calls and all(m["tool_calls"][0]["function"]["arguments"]["query"] == "how do owls hunt at night ?"
                         for m in calls)  # fmt: skip
    assert any(message.get("role") == "tool" for completion in completions for message in completion)
    expected = scorer.score(["how do owls hunt at night ?"])[0]
    logged = [entry["rewards/query_in_tool_call/mean"] for entry in trainer.state.log_history if "loss" in entry]
    assert expected > 0.0 and logged == pytest.approx([expected], abs=BATCH_TOLERANCE)
