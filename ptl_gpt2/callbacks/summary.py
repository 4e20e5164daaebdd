"""Print and save what a fit achieved and what it cost, so runs can be compared in one table."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path
from typing import Any

import lightning as L
import torch


class RunSummary(L.Callback):
    """At the end of fit: metrics, tokens seen, wall time, tokens/s, peak memory, parameters.

    Written to `<log dir>/summary.json` (or `default_root_dir`) and printed, by rank 0. Tokens are
    counted from the `attention_mask` of training batches (real tokens, padding excluded) and, like
    samples, summed over all processes under DDP/FSDP; peak memory is the largest process's.
    """

    def __init__(self, filename: str = "summary.json") -> None:
        self.filename = filename
        self.tokens = 0
        self.samples = 0
        self.start = 0.0

    def on_fit_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.tokens, self.samples, self.start = 0, 0, time.perf_counter()
        if torch.cuda.is_available():
            torch.cuda.reset_peak_memory_stats()

    def on_train_batch_end(self, trainer, pl_module, outputs, batch: Any, batch_idx: int) -> None:
        if isinstance(batch, dict) and "attention_mask" in batch:
            # Summed on the batch's device: int() here would wait for the GPU every step.
            self.tokens = batch["attention_mask"].sum() + self.tokens
            self.samples += len(batch["attention_mask"])

    def summary(self, trainer: L.Trainer, pl_module: L.LightningModule) -> dict[str, Any]:
        """The summary, with tokens and samples summed over all processes and the largest peak memory.

        A collective under DDP/FSDP: every rank must call it.
        """
        wall = time.perf_counter() - self.start
        # int64: float32 would round token counts above 2^24; peak memory in KiB
        counts = torch.tensor([int(self.tokens), self.samples, round(peak_memory_mb() * 1024)], device=pl_module.device)
        counts = trainer.strategy.all_gather(counts).reshape(-1, 3)  # (world_size, 3)
        tokens, samples, peak = int(counts[:, 0].sum()), int(counts[:, 1].sum()), int(counts[:, 2].max()) / 1024
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if torch.as_tensor(v).numel() == 1}
        checkpoint = trainer.checkpoint_callback
        best = getattr(checkpoint, "best_model_score", None)
        return {
            "metrics": metrics,
            "best": None if best is None else {"monitor": checkpoint.monitor, "score": float(best),
                                               "path": checkpoint.best_model_path},
            "global_step": trainer.global_step,
            "epochs": trainer.current_epoch,
            "world_size": trainer.world_size,
            "tokens_seen": tokens,
            "samples_seen": samples,
            "wall_time_s": round(wall, 3),
            "tokens_per_s": round(tokens / wall, 2) if wall > 0 else None,
            "peak_memory_mb": round(peak, 1),
            "trainable_params": sum(p.numel() for p in pl_module.parameters() if p.requires_grad),
            "total_params": sum(p.numel() for p in pl_module.parameters()),
        }

    def on_fit_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        # Every rank takes part (the sums and `trainer.log_dir` are collectives under DDP); rank 0 writes.
        summary = self.summary(trainer, pl_module)
        directory = Path(trainer.log_dir or trainer.default_root_dir)
        if not trainer.is_global_zero:
            return
        directory.mkdir(parents=True, exist_ok=True)
        (directory / self.filename).write_text(json.dumps(summary, indent=2) + "\n")
        metrics = ", ".join(f"{k} {v:.4g}" for k, v in sorted(summary["metrics"].items()))
        world = summary["world_size"]
        print(
            f"\nRun summary ({directory / self.filename}):\n  {metrics}\n"
            f"  {summary['global_step']} steps, {summary['tokens_seen']} tokens in {summary['wall_time_s']:.1f} s "
            f"({summary['tokens_per_s']} tokens/s{f' on {world} processes' if world > 1 else ''}), "
            f"peak memory {summary['peak_memory_mb']} MB{' (the largest process)' if world > 1 else ''}, "
            f"{summary['trainable_params']:,} of {summary['total_params']:,} parameters trained",
            flush=True,
        )


def peak_memory_mb() -> float:
    """Peak CUDA memory where a GPU is used, else the process's peak resident set size."""
    if torch.cuda.is_available() and torch.cuda.max_memory_allocated() > 0:
        return torch.cuda.max_memory_allocated() / 2**20
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / (2**20 if sys.platform == "darwin" else 2**10)
