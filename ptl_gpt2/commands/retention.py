"""`ptl-gpt2 retention`: how much of another task a fine-tuned (or QAFT-ed) model still does, zero-shot.

    ptl-gpt2 retention --checkpoint runs/sonnet/.../last.ckpt --task paraphrase \\
        --data-dir ../shared/data/cs224n --dev-file quora-minbert-dev.csv --limit 1000 --baseline

Fine-tuning on one task (sonnets) can quietly damage others (paraphrase detection). This command
rebuilds the backbone of a checkpoint and scores it without training on:

- `paraphrase`: Quora cloze accuracy: the argmax of the LM's "yes" / "no" logits after the prompt;
- `boolq`: the same cloze on BoolQ passages and questions;
- `perplexity`: LM perplexity on a plain-text file (`--dev-file` under `--data-dir`).

`--baseline` also scores the checkpoint's base model (its `model.pretrained`, or `--base`) and
prints the difference. The checkpoint may come from full fine-tuning, the LoRA callback (adapters
are merged), `QuantizationAwareTraining` or `QuantizeBackbone` (the same quantisation is
re-applied); `--quantize int8|int4|fp8` quantises the weights afterwards (post-training). Prints
one JSON object; `--json PATH` writes it too.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import torch

from ..model import GPT2
from .checkpoints import load_backbone

TASKS = ("paraphrase", "boolq", "perplexity")
DEFAULT_FILES = {"paraphrase": "quora-dev.csv", "boolq": "dev.jsonl", "perplexity": "valid.txt"}


def dev_loader(task: str, data_dir: str, dev_file: str, batch_size: int, max_length: int):
    if task == "paraphrase":
        from datamodules import QuoraDataModule

        dm = QuoraDataModule(data_dir, train_file=None, dev_file=dev_file, test_file=None, batch_size=batch_size,
                             max_length=max_length, skip_unlabeled=True)
    elif task == "boolq":
        from datamodules import BoolQDataModule

        dm = BoolQDataModule(data_dir, train_file=None, dev_file=dev_file, batch_size=batch_size,
                             max_length=max_length, skip_unlabeled=True)
    else:
        from datamodules.text import TextDataModule

        dm = TextDataModule(data_dir, train_file=None, val_file=dev_file, block_size=max_length, batch_size=batch_size)
    dm.setup("validate")
    return dm.val_dataloader()


@torch.no_grad()
def evaluate(model: GPT2, task: str, loader, limit: int | None = None) -> dict[str, Any]:
    """Zero-shot score of `model` on the batches of `loader` (at most `limit` examples)."""
    from ..tasks.cloze import ClozeClassifier
    from ..tasks.lm import lm_loss

    model.eval()
    cloze = ClozeClassifier(preset="tiny") if task != "perplexity" else None
    if cloze is not None:
        cloze.model = model  # the task's scoring code (verbaliser logits at the last token) on our backbone
    correct = seen = 0
    nll = tokens = 0.0
    for batch in loader:
        if limit is not None and seen >= limit:
            break
        if limit is not None and len(batch["input_ids"]) > limit - seen:
            batch = {k: v[: limit - seen] for k, v in batch.items()}
        mask = batch.get("attention_mask", torch.ones_like(batch["input_ids"]))
        batch = {**batch, "attention_mask": mask}
        if cloze is not None:
            scores = cloze.task_outputs(batch)  # (B, 2): "no", "yes"
            correct += (scores.argmax(-1) == batch["labels"]).sum().item()
        else:
            n = mask[:, 1:].sum().item()
            nll += lm_loss(model(batch["input_ids"], mask), batch["input_ids"], mask).item() * n
            tokens += n
        seen += len(batch["input_ids"])
    if cloze is not None:
        return {"metric": "accuracy", "value": correct / max(seen, 1), "examples": seen}
    return {"metric": "perplexity", "value": math.exp(nll / max(tokens, 1)), "examples": seen, "tokens": int(tokens)}


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="ptl-gpt2 retention", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--checkpoint", required=True, help="a Lightning .ckpt or a Hugging Face GPT-2 dir/file")
    parser.add_argument("--task", choices=TASKS, default="paraphrase")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dev-file", help="file under --data-dir (default: " +
                        ", ".join(f"{t}: {f}" for t, f in DEFAULT_FILES.items()) + ")")
    parser.add_argument("--limit", type=int, help="score at most this many examples (blocks for perplexity)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=256, help="prompt tokens (block size for perplexity)")
    parser.add_argument("--quantize", choices=("int8", "int4", "fp8"), help="weight-only PTQ before scoring")
    parser.add_argument("--baseline", action="store_true", help="also score the base model and the difference")
    parser.add_argument("--base", help="the base model for --baseline and for adapter-only checkpoints")
    parser.add_argument("--json", help="also write the result here")
    args = parser.parse_args(argv)

    from ..quantization import quantize_model, size_mb

    loader = dev_loader(args.task, args.data_dir, args.dev_file or DEFAULT_FILES[args.task], args.batch_size,
                        args.max_length)
    model = load_backbone(args.checkpoint, args.base)
    if args.quantize:
        quantize_model(model, args.quantize)
    result: dict[str, Any] = {"checkpoint": str(args.checkpoint), "task": args.task,
                              "quantize": args.quantize, "size_mb": round(size_mb(model), 2),
                              **evaluate(model, args.task, loader, args.limit)}
    if args.baseline:
        base = args.base or _pretrained_of(args.checkpoint)
        if base is None:
            parser.error("--baseline: the checkpoint names no model.pretrained; pass --base")
        result["baseline"] = evaluate(GPT2.from_pretrained(base), args.task, loader, args.limit)["value"]
        result["change"] = result["value"] - result["baseline"]
    text = json.dumps(result, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")


def _pretrained_of(checkpoint: str) -> str | None:
    if not checkpoint.endswith(".ckpt"):
        return None
    return torch.load(checkpoint, map_location="cpu", weights_only=True).get("hyper_parameters", {}).get("pretrained")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
