"""Model and training levers on real data, each one change to the plain fine-tune of the packaged MiniLM (early
stopping and best epoch on dev, test scored once), side by side in one run.

    python scripts/bench/levers.py --max-train-samples 4000 --variants 0 2 3 4 5 --output results/levers.json

Variant 0 is the plain fine-tune of scripts/bench/quality.py (column A: encoder dropout 0); the others change
one thing each. A lever counts on dev only: the test column is for the record.

Each variant goes through the pipeline's own final stage (`qrm_hf.training.final.train_final`), so what is measured is
what ships. Printed per variant: dev MSE of the kept epoch, test MSE / MAE / Pearson, accuracy at 0.8 and at
the threshold chosen on dev, and calibration (mean prediction minus mean label) on test and, in eval mode, on
2,000 of the model's own training rows.
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
from _quality import DEFAULT_DATA, PLAIN_FINETUNE, train_fixed  # noqa: E402

MLP = {"num_hidden_layers": 1, "hidden_dim_ratio": 0.5, "activation": "gelu", "use_layer_norm": True}
# Each a change to the plain fine-tune (column A of quality.py: linear head, encoder dropout 0), one at a time.
VARIANTS = {
    "plain fine-tune, encoder dropout 0": {},
    "encoder dropout as shipped (0.1)": {"encoder_dropout": None},
    "bce loss": {"loss": "bce"},
    "cosine schedule": {"scheduler": "cosine"},
    "layer-wise learning-rate decay 0.8": {"layer_lr_decay": 0.8},
    "3 epochs instead of 2": {"num_epochs": 3},
    "MLP head": MLP,
    "warmup 0.1": {"warmup_ratio": 0.1},
    "top encoder layer re-initialised": {"reinit_top_layers": 1},
    "bce loss, batch 16 instead of 32": {"loss": "bce", "batch_size": 16},
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=DEFAULT_DATA)
    parser.add_argument("--variants", nargs="*", type=int, default=None, help="indices of VARIANTS to run")
    parser.add_argument("--max-train-samples", type=int, default=None)
    parser.add_argument("--max-eval-samples", type=int, default=None, help="smoke runs only")
    parser.add_argument("--max-test-samples", type=int, default=None, help="smoke runs only")
    parser.add_argument("--output", default=None, help="also write the results here as JSON")
    args = parser.parse_args(argv)
    chosen = list(VARIANTS.items())
    if args.variants is not None:
        chosen = [chosen[index] for index in args.variants]
    print(f"machine: {machine()}", flush=True)
    print(f"base configuration: {json.dumps(PLAIN_FINETUNE)}", flush=True)
    print("| variant | dev MSE | test MSE | MAE | Pearson | acc@0.8 | acc@dev thr (thr) | offset test | offset train |")
    print("|---|---|---|---|---|---|---|---|---|", flush=True)
    results = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, change in chosen:
            started = time.perf_counter()
            limits = {
                "max_train_samples": args.max_train_samples,
                "max_eval_samples": args.max_eval_samples,
                "max_test_samples": args.max_test_samples,
            }
            result = train_fixed({**PLAIN_FINETUNE, **change}, args.data, folder, limits)
            minutes = (time.perf_counter() - started) / 60
            test, dev = result.test_metrics, result.dev_metrics
            results[name] = {
                "change": change,
                "minutes": minutes,
                "best_epoch": result.best_epoch,
                "dev": dev,
                "test": test,
                "offset_test": result.test.offset,
                "offset_train_eval_mode": result.train_offset,
            }
            print(
                f"| {name} | {dev['mse']:.4f} | {test['mse']:.4f} | {test['mae']:.4f} | {test['pearson']:.4f} "
                f"| {test['accuracy']:.4f} | {test['accuracy_at_threshold']:.4f} ({test['decision_threshold']:.3f}) "
                f"| {result.test.offset:+.4f} | {result.train_offset:+.4f} |",
                flush=True,
            )
            if args.output:
                Path(args.output).parent.mkdir(parents=True, exist_ok=True)
                Path(args.output).write_text(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
