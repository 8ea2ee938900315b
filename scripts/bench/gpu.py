"""GPU training and scoring throughput of the ModernBERT-base architecture: qrm_hf's pipeline vs the original
recipe, across batch size, precision, attention implementation and torch.compile. One table.

Weights are randomly initialised (nothing can be downloaded on the GPU machine); the compute is the same as
the pretrained model's. Needs only torch and transformers (no optuna, datasets or evaluate).

    python scripts/bench/gpu.py --data .bench_data            # on a GPU, about 6 minutes
    python scripts/bench/gpu.py --device cpu --tiny            # the same code path in seconds, on a CPU
"""

from __future__ import annotations

import argparse
import itertools
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import machine, modernbert_config  # noqa: E402

# Dense peak throughput (FLOP/s) used for model FLOPs utilisation: bf16, and fp32 run as TF32 ("high").
PEAK_FLOPS = {"H100": {"bf16": 989e12, "fp32": 494e12}, "H200": {"bf16": 989e12, "fp32": 494e12}}


def word_tokenizer(queries: list[str]):
    """A word-level tokenizer over the data's vocabulary: ModernBERT's own cannot be downloaded here, and a
    query's word count (plus specials) is close to its subword count."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    words = sorted({word for query in queries for word in query.lower().split()})
    vocab = {token: index for index, token in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", *words])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    core.pre_tokenizer = pre_tokenizers.Whitespace()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=core, pad_token="[PAD]", unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]"
    )


def read_queries(folder: Path, limit: int) -> list[str]:
    from qrm_hf.data import read_tsv

    return read_tsv(folder / "train.tsv")["query"][:limit]


def model_flops(model, batch) -> float:
    """Training FLOPs of one step: 6 x non-embedding parameters x tokens, plus attention's 12 x L x H x S x tokens."""
    config = model.config.encoder
    parameters = sum(p.numel() for n, p in model.named_parameters() if "embeddings" not in n)
    batch_size, length = batch["input_ids"].shape
    tokens = batch_size * length
    return 6 * parameters * tokens + 12 * config.num_hidden_layers * config.hidden_size * length * tokens


def measure(args, queries, tokenizer, recipe, batch_size, dtype, attention, compiled) -> dict:
    import torch

    from qrm_hf.data import QueryCollator
    from qrm_hf.modeling.configuration_qrm import QueryRewardConfig
    from qrm_hf.modeling.modeling_qrm import QueryRewardModel

    device = torch.device(args.device)
    encoder = modernbert_config(tokenizer, tiny=args.tiny)
    encoder._attn_implementation = attention
    torch.manual_seed(0)
    model = QueryRewardModel(QueryRewardConfig(encoder=encoder, pooling="mean", max_length=args.seed_length)).to(device)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=2e-5, fused=device.type == "cuda")
    step_model = torch.compile(model, dynamic=recipe == "qrm_hf") if compiled else model
    collator = QueryCollator(tokenizer, max_length=args.seed_length, pad_to_multiple_of=8)
    labels = torch.rand(len(queries))

    def batches():
        for start in itertools.count(0, batch_size):
            index = [(start + i) % len(queries) for i in range(batch_size)]
            texts = [queries[i] for i in index]
            if recipe == "original":
                batch = dict(
                    tokenizer(
                        texts,
                        padding="max_length",
                        truncation=True,
                        max_length=args.seed_length,
                        return_tensors="pt",
                        return_token_type_ids=False,
                    )
                )
            else:
                batch = collator([tokenizer(text, return_token_type_ids=False) for text in texts])
            batch["labels"] = labels[index]
            yield {key: value.to(device, non_blocking=True) for key, value in batch.items()}

    stream = batches()
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=dtype == "bf16")

    def step():
        batch = next(stream)
        with autocast:
            loss = step_model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return batch

    for _ in range(args.warmup):
        step()
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    flops = tokens = real_tokens = 0
    started = time.perf_counter()
    for _ in range(args.steps):
        batch = step()
        flops += model_flops(model, batch)
        tokens += batch["input_ids"].numel()
        real_tokens += int(batch["attention_mask"].sum())
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    peak = next((v for k, v in PEAK_FLOPS.items() if device.type == "cuda" and k in torch.cuda.get_device_name()), None)
    return {
        "samples_s": args.steps * batch_size / seconds,
        "tokens_s": real_tokens / seconds,
        "mfu": flops / seconds / peak[dtype] if peak else None,
        "peak_gib": torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else None,
        "padding": 1 - real_tokens / tokens,
    }


def scorer_rate(args, queries, tokenizer) -> float:
    import torch

    from qrm_hf.modeling.configuration_qrm import QueryRewardConfig
    from qrm_hf.modeling.modeling_qrm import QueryRewardModel
    from qrm_hf.scoring.scorer import QueryScorer

    encoder = modernbert_config(tokenizer, tiny=args.tiny)
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    model = QueryRewardModel(QueryRewardConfig(encoder=encoder, pooling="mean")).to(args.device, dtype)
    scorer = QueryScorer(model, tokenizer, batch_size=256)
    scorer.score(queries[:512], show_progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    started = time.perf_counter()
    scorer.score(queries, show_progress=False)
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    return len(queries) / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="../shared/data/query-wellformedness", help="folder with train.tsv")
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--tiny", action="store_true", help="a 2-layer model and few steps: checks the code path")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--seed-length", type=int, default=128, help="the original recipe pads to this length")
    parser.add_argument(
        "--compile",
        choices=["auto", "on", "off"],
        default="auto",
        help="auto: on for a GPU (bf16, sdpa), off for --tiny",
    )
    args = parser.parse_args(argv)
    args.steps = args.steps or (2 if args.tiny else 20)
    args.warmup = args.warmup or (1 if args.tiny else 3)

    import torch

    torch.set_float32_matmul_precision("high")
    queries = read_queries(Path(args.data), 4000 if not args.tiny else 256)
    tokenizer = word_tokenizer(queries)
    cuda = args.device.startswith("cuda")
    attentions = ["sdpa", "eager"]
    try:
        import flash_attn  # noqa: F401

        attentions.append("flash_attention_2")
    except ImportError:
        pass
    compile_on = args.compile == "on" or (args.compile == "auto" and cuda)
    configs = [
        (recipe, batch, dtype, attention, False)
        for recipe in ("original", "qrm_hf")
        for batch in ((32, 64) if not args.tiny else (8,))
        for dtype in (("bf16", "fp32") if cuda or not args.tiny else ("fp32",))
        for attention in attentions
    ]
    if compile_on:
        configs += [(recipe, batch, "bf16", "sdpa", True) for recipe in ("original", "qrm_hf") for batch in (32, 64)]
    print(f"machine: {machine()}")
    print(
        f"ModernBERT-{'tiny' if args.tiny else 'base'} (random init), mean pooling, AdamW; original recipe pads "
        f"to {args.seed_length}; qrm_hf pads each batch to its longest (multiple of 8); steps={args.steps} "
        f"after {args.warmup} warm-up"
    )
    print("| recipe | batch | precision | attention | compile | samples/s | tokens/s | MFU | peak GiB | padding |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for recipe, batch, dtype, attention, compiled in configs:
        try:
            r = measure(args, queries, tokenizer, recipe, batch, dtype, attention, compiled)
        except Exception as error:  # one failing combination (e.g. flash on fp32) must not lose the table
            print(
                f"| {recipe} | {batch} | {dtype} | {attention} | {compiled} | failed: {type(error).__name__}: "
                f"{str(error)[:80]} |||||"
            )
            continue
        mfu = f"{r['mfu']:.1%}" if r["mfu"] is not None else "-"
        peak = f"{r['peak_gib']:.2f}" if r["peak_gib"] is not None else "-"
        print(
            f"| {recipe} | {batch} | {dtype} | {attention} | {compiled} | {r['samples_s']:.1f} | "
            f"{r['tokens_s']:.0f} | {mfu} | {peak} | {r['padding']:.0%} |",
            flush=True,
        )
    print(
        f"scorer: {scorer_rate(args, queries, tokenizer):.0f} queries/s ({len(queries)} queries, batch 256, "
        f"{'bf16' if cuda else 'fp32'})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
