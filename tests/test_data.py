import dataclasses

import pytest

from qrm_hf.data import DataFormatError, QueryCollator, load_splits, read_tsv, tokenize_splits


def test_official_splits_load_in_full(data_dir):
    splits = load_splits(str(data_dir))
    assert {name: len(split) for name, split in splits.items()} == {"train": 17500, "dev": 3750, "test": 3850}
    assert splits["train"][0] == {"query": "The European Union includes how many ?", "score": 0.2}


def test_subsets_keep_the_first_rows(data_dir):
    splits = load_splits(str(data_dir), max_train_samples=10, max_eval_samples=5, max_test_samples=7)
    assert (len(splits["train"]), len(splits["dev"]), len(splits["test"])) == (10, 5, 7)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("good query ?\t0.4\nno score here\n", r"bad\.tsv:2: expected 2 tab-separated columns .* found 1"),
        ("good query ?\t0.4\nextra\t0.2\tcolumn\n", r"bad\.tsv:2: expected 2 tab-separated columns .* found 3"),
        ("a query\tzero point two\n", r"bad\.tsv:1: score 'zero point two' is not a number"),
        ("a query\t0.2\nanother\t1.4\n", r"bad\.tsv:2: score 1.4 is outside \[0, 1\]"),
        ("a query\t0.2\n   \t0.6\n", r"bad\.tsv:2: empty query"),
        ("", r"bad\.tsv: no rows"),
    ],
)
def test_malformed_rows_name_file_and_line(tmp_path, content, message):
    path = tmp_path / "bad.tsv"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(DataFormatError, match=message):
        read_tsv(path)


def test_missing_split_file_is_named(tmp_path):
    (tmp_path / "train.tsv").write_text("q ?\t0.2\n")
    (tmp_path / "dev.tsv").write_text("q ?\t0.2\n")
    with pytest.raises(DataFormatError, match=r"test\.tsv: file not found"):
        load_splits(str(tmp_path))


def test_tokenized_once_without_padding_at_the_largest_length(tmp_path, tokenizer):
    folder = tmp_path
    long_query = " ".join(["word"] * 50) + " ?"
    for name in ("train", "dev", "test"):
        (folder / f"{name}.tsv").write_text(f"short one ?\t1.0\n{long_query}\t0.0\n")
    tokenized = tokenize_splits(load_splits(str(folder)), tokenizer, max_length=16)
    lengths = [len(ids) for ids in tokenized["train"]["input_ids"]]
    assert lengths == [5, 16]
    assert tokenized["train"].column_names == ["query", "input_ids", "attention_mask", "labels"]


def test_collator_cuts_to_the_trial_length_and_pads_to_the_longest(tokenizer):
    rows = [
        tokenizer(text, return_token_type_ids=False) for text in ("owls ?", "how do owls hunt at night in winter ?")
    ]
    features = [{**row, "labels": label} for row, label in zip(rows, (0.4, 1.0), strict=True)]
    collator = QueryCollator(tokenizer, max_length=6)
    batch = collator(features)
    assert batch["input_ids"].shape == (2, 6)
    assert batch["input_ids"][1, -1].item() == tokenizer.sep_token_id  # end token kept after cutting
    assert batch["attention_mask"][0].tolist() == [1, 1, 1, 1, 0, 0]
    assert batch["labels"].tolist() == pytest.approx([0.4, 1.0])
    longer = dataclasses.replace(collator, max_length=64)
    assert longer(features)["input_ids"].shape == (2, len(rows[1]["input_ids"]))
    assert QueryCollator(tokenizer, max_length=64, pad_to_multiple_of=8)(features)["input_ids"].shape[1] % 8 == 0


def test_a_byte_that_is_not_utf8_names_file_line_and_byte_offset(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes(b"good query ?\t0.4\nbad \xe9 byte\t0.2\n")

    with pytest.raises(DataFormatError, match=r"train\.tsv:2: not UTF-8 text \(invalid continuation byte at byte 21\)"):
        read_tsv(path)


def test_a_leading_byte_order_mark_is_not_part_of_the_first_query(tmp_path):
    path = tmp_path / "train.tsv"
    path.write_bytes("\ufeffhow do owls hunt ?\t1.0\nowls\t0.0\n".encode())

    assert read_tsv(path)["query"] == ["how do owls hunt ?", "owls"]
