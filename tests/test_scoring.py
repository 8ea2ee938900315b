"""QueryScorer: order, clamping, batching and every bad input a user can hand it, on a saved tiny model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qrm_hf import QueryRewardConfig, QueryRewardModel
from qrm_hf.modeling.model_files import save_reward_model
from qrm_hf.scoring.scorer import QueryScorer

QUERIES = [
    "how do owls hunt ?",
    "owls",
    "what is the capital of france",
    "a",
    "best pizza near me that is open late on a sunday night",
    "where",
    "why is the sky blue during the day but red at sunset",
    "cheap flights",
    "is it safe to eat raw cookie dough",
    "2+2",
]


def widen_head(model: QueryRewardModel, tokenizer, queries: list[str]) -> None:
    """Scale the output layer so raw scores of `queries` spread with std 1 around 0.5.

    A random tiny model scores every query within ~1e-3 of the others, inside [0, 1]: nothing to clamp and
    little to tell one query from another.
    """
    last = model.head.layers[-1]
    model.eval()
    with torch.no_grad():
        raw = torch.cat([model(**tokenizer([query], return_tensors="pt")).scores for query in queries])
        spread, offset = raw.std(), raw.mean() - last.bias
        last.weight.div_(spread)
        last.bias.copy_(0.5 - offset / spread)


@pytest.fixture(scope="module")
def saved_model_dir(tmp_path_factory, tiny_encoder_config, tokenizer) -> Path:
    """A saved tiny reward model (built as make_tiny_model builds it, once per module) with its tokenizer."""
    torch.manual_seed(0)
    model = QueryRewardModel(QueryRewardConfig(encoder=tiny_encoder_config.to_dict(), max_length=32))
    widen_head(model, tokenizer, QUERIES)
    folder = tmp_path_factory.mktemp("reward-model")
    save_reward_model(model, tokenizer, folder)
    return folder


@pytest.fixture(scope="module")
def scorer(saved_model_dir) -> QueryScorer:
    return QueryScorer.from_pretrained(saved_model_dir, device="cpu", batch_size=4)


def test_scores_come_back_in_input_order_despite_length_sorting(scorer):
    one_by_one = [scorer.score([query], raw=True)[0] for query in QUERIES]
    assert len({round(value, 2) for value in one_by_one}) > len(QUERIES) // 2, "queries must score differently"

    batched = scorer.score(QUERIES, raw=True, batch_size=3)

    # Padding moves float noise by ~1e-4 through the widened head; a misplaced score would be off by ~1.
    assert batched == pytest.approx(one_by_one, abs=1e-3)


def test_scores_are_clamped_to_unit_interval_unless_raw(scorer):
    raw = scorer.score(QUERIES, raw=True)
    assert min(raw) < 0.0 and max(raw) > 1.0, "the widened head must score some queries outside [0, 1]"

    clamped = scorer.score(QUERIES)

    assert all(isinstance(value, float) for value in clamped)
    assert clamped == pytest.approx([min(max(value, 0.0), 1.0) for value in raw], abs=1e-6)


@pytest.mark.parametrize("batch_size", [1, 2, 7, 64])
def test_batch_size_does_not_change_scores(scorer, batch_size):
    reference = scorer.score(QUERIES, raw=True, batch_size=len(QUERIES))

    assert scorer.score(QUERIES, raw=True, batch_size=batch_size) == pytest.approx(reference, abs=1e-3)


def test_empty_list_gives_empty_list(scorer):
    assert scorer.score([]) == []


def test_blank_queries_are_scored_as_the_empty_string(scorer):
    scores = scorer.score(["", " ", "\t\n  ", "owls"], raw=True)

    assert scores[1] == pytest.approx(scores[0], abs=1e-6)
    assert scores[2] == pytest.approx(scores[0], abs=1e-6)
    assert scores[3] != pytest.approx(scores[0], abs=1e-3)


def test_non_string_item_raises_type_error_naming_its_index(scorer):
    with pytest.raises(TypeError, match=r"queries\[2\] is int"):
        scorer.score(["owls", "how do owls hunt ?", 42])


def test_single_string_instead_of_a_list_raises_with_the_fix(scorer):
    with pytest.raises(TypeError, match=r"wrap one query as \[query\]"):
        scorer.score("how do owls hunt ?")


def test_very_long_query_is_truncated_to_max_length(scorer):
    assert scorer.max_length == 32

    long_score, longer_score = scorer.score(["owls hunt " * 200, "owls hunt " * 5000], raw=True)

    assert longer_score == pytest.approx(long_score, abs=1e-5)


def test_scoring_restores_train_mode_and_disables_dropout(saved_model_dir, tokenizer):
    model = QueryRewardModel.from_pretrained(saved_model_dir)
    model.train()
    scorer = QueryScorer(model, tokenizer)

    first, second = scorer.score(QUERIES, raw=True), scorer.score(QUERIES, raw=True)

    assert first == second
    assert model.training


def test_progress_bar_for_many_queries_only(scorer, capsys):
    scorer.score(QUERIES)
    assert "Scoring" not in capsys.readouterr().err

    scorer.score(QUERIES, show_progress=True)
    assert "Scoring" in capsys.readouterr().err


def test_cpu_scorer_uses_float32(scorer):
    assert scorer.device.type == "cpu"
    assert scorer.model.dtype == torch.float32


def test_unknown_dtype_name_is_rejected(saved_model_dir):
    with pytest.raises(ValueError, match="dtype 'float33' is not a torch dtype"):
        QueryScorer.from_pretrained(saved_model_dir, dtype="float33")


def test_folder_without_config_json_is_rejected(tmp_path):
    with pytest.raises(OSError, match="has no config.json"):
        QueryScorer.from_pretrained(tmp_path)


def test_folder_of_another_model_type_is_rejected(tiny_encoder_dir):
    with pytest.raises(ValueError, match="model_type 'modernbert', expected 'query_reward'"):
        QueryScorer.from_pretrained(tiny_encoder_dir)


def test_folder_without_tokenizer_is_rejected(saved_model_dir, tmp_path):
    for name in ("config.json", "model.safetensors"):
        (tmp_path / name).write_bytes((saved_model_dir / name).read_bytes())

    with pytest.raises(OSError, match="has no tokenizer"):
        QueryScorer.from_pretrained(tmp_path)


def test_hub_id_missing_from_the_offline_cache_is_an_os_error(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OSError, match="no-such-org/no-such-model is neither a local folder nor a Hub repo"):
        QueryScorer.from_pretrained("no-such-org/no-such-model")


def test_classify_uses_the_models_decision_threshold(saved_model_dir, tmp_path):
    import shutil

    from qrm_hf.modeling.modeling_qrm import QueryRewardModel

    folder = tmp_path / "thresholded"
    shutil.copytree(saved_model_dir, folder)
    model = QueryRewardModel.from_pretrained(folder)
    queries = ["how do owls hunt ?", "owls hunt how", "what is the capital of greece ?"]
    scores = QueryScorer.from_pretrained(folder).score(queries)
    model.config.decision_threshold = sorted(scores)[1]
    model.save_pretrained(folder)
    scorer = QueryScorer.from_pretrained(folder)
    assert scorer.decision_threshold == sorted(scores)[1]
    assert scorer.classify(queries) == [score >= sorted(scores)[1] for score in scores]
    assert scorer.classify(queries, threshold=0.0) == [True, True, True]
    with pytest.raises(ValueError, match=r"threshold must be in \[0, 1\]"):
        scorer.classify(queries, threshold=2.0)


def test_lone_surrogates_are_scored_as_the_replacement_character_without_failing_the_batch(scorer):
    """A JSON "\\ud800" escape or a broken generation must not kill the batch it is in (tokenizers refuse it)."""
    scores = scorer.score(["owls", "how do owls hunt \ud800?", "owls \ud83d\ude00"], raw=True)

    # Each lone surrogate is U+FFFD; a high/low pair given as two code points is the character it encodes.
    assert scores == scorer.score(["owls", "how do owls hunt \ufffd?", "owls \U0001f600"], raw=True)


def test_normalize_query_replaces_surrogates_drops_a_bom_and_blanks():
    from qrm_hf.scoring.scorer import normalize_query

    assert normalize_query("a\ud800b\udc00") == "a\ufffdb\ufffd"
    assert normalize_query("\ufeffhow do owls hunt ?") == "how do owls hunt ?"
    assert normalize_query("\ufeff") == normalize_query(" \t\n") == ""


def test_a_leading_byte_order_mark_is_not_scored(scorer):
    assert scorer.score(["\ufeffowls"], raw=True) == pytest.approx(scorer.score(["owls"], raw=True), abs=1e-6)


def test_dataframe_and_dict_are_refused_with_the_column_to_pass(scorer):
    import pandas as pd

    frame = pd.DataFrame({"query": QUERIES[:2], "id": [1, 2]})
    with pytest.raises(
        TypeError, match=r'queries is a DataFrame: .* its column names; pass one column .*df\["query"\]'
    ):
        scorer.score(frame)
    with pytest.raises(TypeError, match=r"queries is a dict: iterating it would score its keys"):
        scorer.score({"query": QUERIES[:2]})
    with pytest.raises(TypeError, match=r'queries\[0\] is dict, not str: .*pass one column, e.g. dataset\["query"\]'):
        scorer.score([{"query": "owls"}])

    assert scorer.score(frame["query"]) == pytest.approx(scorer.score(QUERIES[:2]), abs=1e-6)


def test_none_instead_of_a_list_is_a_type_error(scorer):
    with pytest.raises(TypeError, match="queries must be a list of strings, got NoneType"):
        scorer.score(None)


@pytest.mark.parametrize(
    ("batch_size", "error"), [(1.5, TypeError), ("8", TypeError), (True, TypeError), (0, ValueError)]
)
def test_batch_size_that_is_not_a_positive_int_is_refused_naming_it(scorer, saved_model_dir, batch_size, error):
    with pytest.raises(error, match="batch_size must be"):
        scorer.score(QUERIES, batch_size=batch_size)
    with pytest.raises(error, match="batch_size must be"):
        QueryScorer.from_pretrained(saved_model_dir, device="cpu", batch_size=batch_size)


def test_unknown_or_missing_devices_are_refused_naming_what_is_available(saved_model_dir, monkeypatch):
    with pytest.raises(ValueError, match=r"device 'tpu' is not a device torch knows; available here: cpu"):
        QueryScorer.from_pretrained(saved_model_dir, device="tpu")
    with pytest.raises(ValueError, match=r"device 'meta' is not available on this machine; available here: cpu"):
        QueryScorer.from_pretrained(saved_model_dir, device="meta")
    # As on a machine without a GPU, whichever machine runs the test.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda' is not available: torch .* sees no CUDA GPU"):
        QueryScorer.from_pretrained(saved_model_dir, device="cuda")


def test_a_dtype_that_cannot_hold_weights_is_refused(saved_model_dir):
    with pytest.raises(ValueError, match="dtype torch.int8 cannot hold a model's weights"):
        QueryScorer.from_pretrained(saved_model_dir, device="cpu", dtype="int8")


def copy_model(source: Path, target: Path) -> Path:
    import shutil

    shutil.copytree(source, target)
    return target


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        ("truncate", r"model\.safetensors is incomplete or corrupt \(\d+ bytes; .*\): an interrupted save"),
        ("empty", r"model\.safetensors is incomplete or corrupt \(0 bytes; .*header too small"),
        ("delete", r"has no weights \(model\.safetensors\): the folder is incomplete"),
    ],
)
def test_incomplete_weights_are_named(saved_model_dir, tmp_path, damage, message):
    folder = copy_model(saved_model_dir, tmp_path / "model")
    weights = folder / "model.safetensors"
    if damage == "truncate":
        weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    elif damage == "empty":
        weights.write_bytes(b"")
    else:
        weights.unlink()

    with pytest.raises(OSError, match=message):
        QueryScorer.from_pretrained(folder, device="cpu")


def test_a_path_that_does_not_exist_is_a_missing_folder_not_a_bad_repo_id(tmp_path):
    with pytest.raises(
        FileNotFoundError, match=r"/nonexistent/model: no such folder \(resolved to /nonexistent/model\)"
    ):
        QueryScorer.from_pretrained("/nonexistent/model")
    with pytest.raises(FileNotFoundError, match=r"no such folder"):
        QueryScorer.from_pretrained(tmp_path / "runs" / "final_model")


def test_a_megabyte_query_is_cut_before_tokenizing_and_scores_as_its_visible_start(scorer):
    """The model sees max_length tokens; text past max_length * MAX_CHARS_PER_TOKEN characters is never
    tokenized, so one huge query cannot stall a batch, and its score is that of the text the model can see."""
    from qrm_hf.scoring.scorer import MAX_CHARS_PER_TOKEN

    huge = "how do owls hunt ? " * 60_000  # 1.1 MB
    limit = scorer.max_length * MAX_CHARS_PER_TOKEN
    assert scorer.encode([huge]) == scorer.encode([huge[:limit]])
    assert scorer.score([huge]) == pytest.approx(scorer.score([huge[:limit]]), abs=1e-6)
    # Its token count is extrapolated from the part tokenized: about 6 tokens per repetition.
    [count] = scorer.token_counts([huge])
    assert 5 * 60_000 < count < 7 * 60_000
    assert scorer.token_counts(["how do owls hunt ?"]) == [len(scorer.encode(["how do owls hunt ?"])[0])] == [7]


def test_the_int8_backend_quantizes_the_encoder_but_not_its_residual_projections_nor_the_head(saved_model_dir):
    from torch.ao.nn.quantized.dynamic import Linear as DynamicInt8Linear

    from qrm_hf.scoring.scorer import FLOAT_LINEAR_SUFFIXES

    scorer = QueryScorer.from_pretrained(saved_model_dir, backend="int8")
    kinds = {name: type(module) for name, module in scorer.model.encoder.named_modules() if "W" in name.split(".")[-1]}

    quantized = {name for name, kind in kinds.items() if kind is DynamicInt8Linear}
    assert quantized and all(not name.endswith(FLOAT_LINEAR_SUFFIXES) for name in quantized)
    assert {name for name in kinds if name.endswith(".Wo")} == {n for n, k in kinds.items() if k is torch.nn.Linear}
    assert all(type(layer) is not DynamicInt8Linear for layer in scorer.model.head.modules())
    fp32 = QueryScorer.from_pretrained(saved_model_dir, device="cpu")
    assert scorer.score(QUERIES) == pytest.approx(fp32.score(QUERIES), abs=0.05)


def edited_copy(saved_model_dir, tmp_path, **config_values):
    import json
    import shutil

    folder = tmp_path / "edited"
    shutil.copytree(saved_model_dir, folder)
    config = json.loads((folder / "config.json").read_text())
    config.update(config_values)
    (folder / "config.json").write_text(json.dumps(config))
    return folder


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"decision_threshold": 1.5}, r"config.json: decision_threshold = 1.5 is not in \[0, 1\]"),
        ({"decision_threshold": "high"}, r"config.json: decision_threshold = 'high' is not a finite number"),
        ({"max_length": 100000}, r"config.json: max_length = 100000 exceeds the encoder's 512 positions"),
        ({"max_length": 0}, r"config.json: max_length = 0 is not a whole number >= 2"),
        ({"max_length": 1}, r"config.json: max_length = 1 is not a whole number >= 2"),  # start and end tokens
        ({"use_layer_norm": "yes"}, r"config.json: use_layer_norm = 'yes' is not true or false"),
        ({"pooling": "max"}, r"edited: config.json holds a value the model cannot take \(pooling must be one of"),
        ({"dropout": 2}, r"edited: config.json holds a value the model cannot take \(dropout must be in"),
        ({"ensemble_size": 2}, r"edited: (config.json does not fit the weights|the model scores the query)"),
        ({"num_hidden_layers": 3}, r"edited: config.json does not fit the weights"),
        ({"num_hidden_layers": -1}, r"config.json: num_hidden_layers = -1 is not a whole number >= 0"),
        ({"encoder": "x"}, r"config.json: encoder = \"x\" is not an encoder's config"),
        ({"encoder": {"hidden_size": 32}}, r"config.json: encoder = .* is not an encoder's config"),
        ({"encoder": None}, r"config.json: encoder = null is not an encoder's config"),
    ],
)
def test_a_model_folder_with_a_bad_config_is_refused_when_it_loads(saved_model_dir, tmp_path, values, message):
    folder = edited_copy(saved_model_dir, tmp_path, **values)
    with pytest.raises((ValueError, OSError), match=message):
        QueryScorer.from_pretrained(folder, device="cpu")


def test_weights_that_compute_nan_are_refused_when_the_model_loads(saved_model_dir, tmp_path):
    import shutil

    from safetensors.torch import load_file, save_file

    folder = tmp_path / "nan"
    shutil.copytree(saved_model_dir, folder)
    weights = load_file(folder / "model.safetensors")
    name = next(key for key in weights if key.startswith("head.") and key.endswith("weight"))
    weights[name] = torch.full_like(weights[name], float("nan"))
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"nan: the model scores the query 'how do owls hunt at night \?' as nan"):
        QueryScorer.from_pretrained(folder, device="cpu")
