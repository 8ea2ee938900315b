"""Quality on real data, in one run: (A) the strongest plain fine-tune (encoder dropout 0) against (B) the full
pipeline on configs/cpu.yaml (search, final stage, threshold chosen on dev), with B's levers taken apart: its
best final-stage candidate alone (not combined) and its best trial's own model; all scored on the full test split,
beside published anchors.

    python scripts/bench/quality.py --config configs/cpu.yaml --output results/quality.json

A and B go through the same final stage (`qrm_hf.final.train_final`: all of train, best dev epoch kept,
threshold chosen on dev, test scored once); A's configuration is fixed, B's comes from the search. The test
figures of B's single candidates are recorded for this table only: nothing in B is chosen on test.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402
from _quality import ANCHORS, DEFAULT_DATA, PLAIN_FINETUNE, train_fixed  # noqa: E402

ROWS = [
    ("test MSE", "mse"),
    ("test MAE", "mae"),
    ("Pearson", "pearson"),
    ("Spearman", "spearman"),
    ("R²", "r2"),
    ("accuracy at 0.8", "accuracy"),
    ("F1 at 0.8", "f1"),
    ("threshold chosen on dev", "decision_threshold"),
    ("accuracy at the dev threshold", "accuracy_at_threshold"),
    ("F1 at the dev threshold", "f1_at_threshold"),
    ("mean prediction - mean label (test)", "offset"),
]


def best_trial_model_metrics(folder: Path, data: str, limits: dict[str, int | None]) -> dict[str, Any]:
    """Score dev and test with a saved model: threshold chosen on its dev predictions, then test once."""
    from qrm_hf.data import load_splits
    from qrm_hf.metrics import choose_threshold, score_metrics
    from qrm_hf.scoring import QueryScorer

    scorer = QueryScorer.from_pretrained(folder, device="cpu")
    splits = load_splits(data, limits["max_train_samples"], limits["max_eval_samples"], limits["max_test_samples"])
    dev = scorer.score(splits["dev"]["query"], show_progress=False)
    threshold = choose_threshold(dev, splits["dev"]["score"])
    test = scorer.score(splits["test"]["query"], show_progress=False)
    metrics = score_metrics(test, splits["test"]["score"], threshold)
    metrics["dev_mse"] = score_metrics(dev, splits["dev"]["score"])["mse"]
    return metrics


def run_pipeline_b(config_path: str, output_dir: str, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The whole pipeline on `config_path`, in a fresh study under `output_dir`."""
    from qrm_hf.pipeline import run_pipeline
    from qrm_hf.run_config import RunConfig

    config = RunConfig.from_yaml(config_path, output_dir=output_dir, force=True, **overrides)
    result = run_pipeline(config)
    final = json.loads(config.layout.final_summary.read_text())
    return config, {"result": result, "final": final}


def study_facts(config: Any) -> dict[str, Any]:
    """What B's study did: trials by origin, the warm-start trial's and the best trial's dev MSE."""
    import optuna

    from qrm_hf.report import summarize
    from qrm_hf.trials import WARM_START, trial_origin

    study = optuna.load_study(study_name=config.resolved_study_name, storage=config.resolved_storage)
    summary = summarize(study)
    warm = [t.value for t in study.trials if trial_origin(t) == WARM_START and t.value is not None]
    return {
        "origins": summary.origins,
        "counts": summary.counts,
        "best_trial": summary.best_trial.number,
        "best_value": summary.best_trial.value,
        "best_drawn_by": trial_origin(summary.best_trial),
        "best_params": summary.best_trial.params,
        "warm_start_value": min(warm) if warm else None,
        "search_minutes": (summary.wall_seconds or 0.0) / 60,
    }


class CandidateTestScores:
    """Wraps `qrm_hf.final.fit_candidate` so that each final-stage candidate of B is also scored on test (dev
    threshold), before they are combined: the "without combining" column. B's own choices never see these figures."""

    def __init__(self) -> None:
        import qrm_hf.final as final

        self.final = final
        self.original = final.fit_candidate
        self.metrics: list[dict[str, Any]] = []
        self.test_predictions: list[tuple[Any, Any]] = []
        self.tokenized = None

    def __enter__(self) -> CandidateTestScores:
        def fit_and_score(config, space, params, tokenized, tokenizer, encoder):
            from qrm_hf.metrics import choose_threshold, score_metrics

            trainer = self.original(config, space, params, tokenized, tokenizer, encoder)
            dev = self.final.predictions_of(trainer, tokenized["dev"])
            test = self.final.predictions_of(trainer, tokenized["test"])
            threshold = choose_threshold(dev.predicted, dev.true, config.threshold_metric)
            metrics = score_metrics(test.predicted, test.true, threshold)
            metrics["dev_mse"] = score_metrics(dev.predicted, dev.true)["mse"]
            metrics["params"] = params
            self.metrics.append(metrics)
            self.test_predictions.append((test.predicted, test.true))
            return trainer

        self.final.fit_candidate = fit_and_score
        return self

    def __exit__(self, *exc: Any) -> None:
        self.final.fit_candidate = self.original

    def best_by_dev(self) -> dict[str, Any]:
        return min(self.metrics, key=lambda metrics: metrics["dev_mse"])

    def before_refit(self, final: dict[str, Any]) -> dict[str, Any]:
        """With refit_on_dev: the test metrics of the combination dev chose, before its members were refit on
        train and dev (the mean of the members' scores, at the same threshold). An ensemble's score is that mean;
        a soup's is not, so a soup gets none."""
        import numpy as np

        from qrm_hf.metrics import score_metrics

        members = [index for index, record in enumerate(final["candidates"]) if record["in_model"]]
        if final["combine"] != "ensemble" and len(members) > 1:
            return {}
        predicted = np.mean([self.test_predictions[index][0] for index in members], axis=0)
        return score_metrics(predicted, self.test_predictions[members[0]][1], final["decision_threshold"])


def with_offset(metrics: dict[str, Any]) -> dict[str, Any]:
    return {**metrics, "offset": metrics["mean_prediction"] - metrics["mean_reference"]}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu.yaml", help="B's run configuration")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--output", default=None, help="also write every figure here as JSON")
    parser.add_argument("--n-trials", type=int, default=None, help="override B's trial budget (smoke runs)")
    for split in ("train", "eval", "test"):
        parser.add_argument(f"--max-{split}-samples", type=int, default=None, help="smoke runs only: fewer rows")
    parser.add_argument("--search-train-samples", type=int, default=None, help="override B's search rows")
    args = parser.parse_args(argv)

    limits = {
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "max_test_samples": args.max_test_samples,
    }
    overrides = {"data": args.data, "n_trials": args.n_trials, "search_train_samples": args.search_train_samples}
    print(f"machine: {machine()}", flush=True)
    with tempfile.TemporaryDirectory() as folder:
        started = time.perf_counter()
        plain = train_fixed(PLAIN_FINETUNE, args.data, str(Path(folder) / "a"), limits)
        a_minutes = (time.perf_counter() - started) / 60
        print(f"A done in {a_minutes:.1f} min: test MSE {plain.test_metrics['mse']:.4f}", flush=True)

        started = time.perf_counter()
        with CandidateTestScores() as candidates:
            config, b = run_pipeline_b(args.config, str(Path(folder) / "b"), {**overrides, **limits})
        b_minutes = (time.perf_counter() - started) / 60
        facts = study_facts(config)
        best_trial = best_trial_model_metrics(config.layout.best_trial_model, args.data, limits)

    columns = {
        "A: plain fine-tune, encoder dropout 0": with_offset(plain.test_metrics),
        "B: pipeline, shipped model": with_offset(b["result"].test_metrics),
    }
    if b["final"].get("refit_rows") and candidates.before_refit(b["final"]):
        columns["B before the refit on dev (trained on train only)"] = with_offset(candidates.before_refit(b["final"]))
    columns |= {
        "B without combining (its best candidate by dev)": with_offset(candidates.best_by_dev()),
        "B: best trial's own model": with_offset(best_trial),
    }
    print(f"A: {json.dumps(PLAIN_FINETUNE)}; {a_minutes:.1f} min; dev MSE {plain.dev_metrics['mse']:.4f}")
    for record in b["final"].get("candidates", []):
        print(f"B candidate: {json.dumps(record)}")
    for metrics in candidates.metrics:
        print(f"B candidate test (not used by B): dev MSE {metrics['dev_mse']:.4f}, test MSE {metrics['mse']:.4f}")
    print(
        f"B: {args.config}; {b_minutes:.1f} min in all (search {facts['search_minutes']:.1f} min); trials "
        f"{facts['origins']}; best trial {facts['best_trial']} ({facts['best_drawn_by']}) dev MSE "
        f"{facts['best_value']:.4f} on the search's rows; warm-start trial {facts['warm_start_value']}; final "
        f"model dev MSE {b['final']['dev_metrics']['mse']:.4f}, best epoch {b['final']['best_epoch']}, "
        f"calibration {json.dumps(b['final']['calibration'])}"
    )
    print(f"B's best parameters: {json.dumps(facts['best_params'])}")
    print(f"| metric (test, n={plain.test_metrics['n']}) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, key in ROWS:
        print(f"| {label} | " + " | ".join(f"{values[key]:.4f}" for values in columns.values()) + " |")
    inside = " (inside B) |" * (len(columns) - 2)
    print(f"| wall time (min) | {a_minutes:.1f} | {b_minutes:.1f} (search + final) |{inside}")
    reduction = 1 - b["result"].test_metrics["mse"] / plain.test_metrics["mse"]
    print(f"B's test MSE is {100 * reduction:.1f}% lower than A's")
    print("anchors: " + "; ".join(f"{name}: {value}" for name, value in ANCHORS))
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        record = {
            "machine": machine(),
            "a": {"config": PLAIN_FINETUNE, "minutes": a_minutes, "dev": plain.dev_metrics, "test": plain.test_metrics},
            "b": {"minutes": b_minutes, "study": facts, "final": b["final"], "test": b["result"].test_metrics},
            "b_best_trial_model": best_trial,
            "b_candidates_test": candidates.metrics,
            "b_before_refit_test": candidates.before_refit(b["final"]) if b["final"].get("refit_rows") else None,
        }
        Path(args.output).write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
