"""Dropout on CPU: `ptl_gpt2.ops.dropout` (32-bit lanes of 64-bit draws) against `F.dropout`; prints JSON.

    python benchmarks/bench_dropout.py [--repeats 30] [--threads 2]

Shapes are GPT-2 124M's at a batch of 8 x 128: the residual stream (8, 128, 768), dropped 25 times
a training step, and the attention probabilities (8, 12, 128, 128), 12 times (their mask is
`drop_mask`'s alone, as `dropout_attention` applies it). Timed: forward + backward of
x -> dropout(x, 0.1), and the mask alone; ours and torch's interleaved, medians in ms.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

from ptl_gpt2.ops.dropout import drop_mask, dropout

SHAPES = {"residual": (8, 128, 768), "attention": (8, 12, 128, 128)}
P = 0.1


def median_ms(fns: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return {name: round(statistics.median(t) * 1e3, 3) for name, t in times.items()}


def forward_backward(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> Callable[[], None]:
    grad = torch.ones_like(x)

    def run() -> None:
        fn(x).backward(grad)
        x.grad = None

    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    result: dict = {"benchmark": "dropout", "p": P, "threads": torch.get_num_threads(), "torch": torch.__version__,
                    "load_average_start": [round(x, 2) for x in os.getloadavg()]}
    for name, shape in SHAPES.items():
        x = torch.randn(shape, requires_grad=True)
        ms = median_ms({
            "ours_forward_backward": forward_backward(lambda t: dropout(t, P), x),
            "torch_forward_backward": forward_backward(lambda t: F.dropout(t, P), x),
            "ours_mask": lambda: drop_mask(shape, P),
            "torch_bernoulli_mask": lambda: torch.empty(shape).bernoulli_(1 - P),
        }, args.repeats)
        ms["speedup_forward_backward"] = round(ms["torch_forward_backward"] / ms["ours_forward_backward"], 2)
        ms["speedup_mask"] = round(ms["torch_bernoulli_mask"] / ms["ours_mask"], 2)
        result[name] = {"shape": list(shape), **ms}
    result["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
