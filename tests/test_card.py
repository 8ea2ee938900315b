"""The model card: Hub metadata with both thresholds labelled, and the template shipped as package data."""

from qrm_hf.card import card_data, template_text

METRICS = {
    "mse": 0.07,
    "accuracy": 0.77,
    "f1": 0.70,
    "decision_threshold": 0.65,
    "accuracy_at_threshold": 0.79,
    "f1_at_threshold": 0.74,
}


def test_model_index_labels_the_papers_and_the_dev_chosen_threshold():
    data = card_data("m", "sentence-transformers/all-MiniLM-L6-v2", METRICS)
    names = {result.metric_name: result.metric_value for result in data.eval_results}
    assert names["accuracy (threshold 0.8, the paper's)"] == 0.77
    assert names["accuracy (threshold 0.65, chosen on dev)"] == 0.79
    assert names["f1 (threshold 0.65, chosen on dev)"] == 0.74
    assert all(result.dataset_split == "test" for result in data.eval_results)


def test_template_is_read_from_the_package():
    text = template_text()
    assert "{{ card_data }}" in text and "decision_threshold" in text
