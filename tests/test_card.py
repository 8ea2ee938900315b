"""The model card: Hub metadata with both thresholds labelled, and the template shipped as package data."""

from qrm_hf.reporting.card import QueryRewardCardData, template_text, write_model_card

METRICS = {
    "mse": 0.07,
    "accuracy": 0.77,
    "f1": 0.70,
    "decision_threshold": 0.65,
    "accuracy_at_threshold": 0.79,
    "f1_at_threshold": 0.74,
}


def test_model_index_labels_the_papers_and_the_dev_chosen_threshold():
    data = QueryRewardCardData(
        model_name="m", base_model="sentence-transformers/all-MiniLM-L6-v2", test_metrics=METRICS
    )
    names = {result.metric_name: result.metric_value for result in data.eval_results}
    assert names["accuracy (threshold 0.8, the paper's)"] == 0.77
    assert names["accuracy (threshold 0.65, chosen on dev)"] == 0.79
    assert names["f1 (threshold 0.65, chosen on dev)"] == 0.74
    assert all(result.dataset_split == "test" for result in data.eval_results)


def test_template_is_read_from_the_package():
    text = template_text()
    assert "{{ card_data }}" in text and "decision_threshold" in text


def test_the_header_holds_hub_metadata_and_the_body_the_run(tmp_path):
    data = QueryRewardCardData(
        model_name="m",
        test_metrics=METRICS,
        hyperparameters={"learning_rate": 5e-5},
        best_value=0.071,
        n_trials=12,
        max_length=64,
        decision_threshold=0.65,
        method="the best trial's values trained on all 17500 training rows",
    )
    header = data.to_dict()
    assert header["license"] == "cc-by-sa-4.0" and "model-index" in header
    assert not set(QueryRewardCardData.RUN_FACTS) & set(header)
    text = write_model_card(tmp_path, data).content
    assert "12 trials" in text and "0.65" in text and "max_length=64" in text and "17500 training rows" in text
    assert (tmp_path / "README.md").read_text().startswith("---\n")
