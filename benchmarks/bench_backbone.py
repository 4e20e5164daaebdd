"""Backbone speed on this machine: training step and greedy generation, printed as JSON.

    python benchmarks/bench_backbone.py [--preset gpt2] [--batch 8] [--seq 128] [--steps 3]

Training: forward + backward + AdamW step on random tokens (fp32), tokens/s and the process's peak
RSS. Generation: greedy, 32-token prompt, 128 new tokens, batch 1, with and without the KV cache.
Random weights: the speed of a GPT-2 does not depend on its weights.
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ptl_gpt2.callbacks.summary import peak_memory_mb
from ptl_gpt2.generation import generate
from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.tasks.lm import lm_loss


def train_tokens_per_s(model: GPT2, batch: int, seq: int, steps: int) -> float:
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
    x = torch.randint(0, model.config.vocab_size, (batch, seq))
    mask = torch.ones_like(x)
    model.train()
    times = []
    for _ in range(steps + 1):  # the first step warms up (allocations, optimizer state)
        start = time.perf_counter()
        loss = lm_loss(model(x), x, mask)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - start)
    return batch * seq / (sum(times[1:]) / steps)


def generation_tokens_per_s(model: GPT2, use_cache: bool, new_tokens: int = 128, prompt_len: int = 32) -> float:
    prompt = torch.randint(0, model.config.vocab_size, (prompt_len,)).tolist()
    start = time.perf_counter()
    out = generate(model, [prompt], max_new_tokens=new_tokens, eos_token_id=None, use_cache=use_cache)
    return len(out.token_ids[0]) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = GPT2(GPT2Config.from_name(args.preset, embd_pdrop=0.0, attn_pdrop=0.0, resid_pdrop=0.0))
    result = {
        "benchmark": "backbone",
        "preset": args.preset,
        "params": model.num_parameters(),
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
        "train_batch": [args.batch, args.seq],
        "train_tokens_per_s": round(train_tokens_per_s(model, args.batch, args.seq, args.steps), 1),
        "train_peak_rss_mb": round(peak_memory_mb(), 1),
        "generate_greedy_tokens_per_s_cache": round(generation_tokens_per_s(model, True), 2),
        "generate_greedy_tokens_per_s_no_cache": round(generation_tokens_per_s(model, False), 2),
    }
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
