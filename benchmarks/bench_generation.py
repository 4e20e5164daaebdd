"""Greedy decoding speed: tokens/s with and without the KV cache, and against Hugging Face.

The `gpt2` (124M) preset with random weights (no pretrained weights are available offline); speed does
not depend on the weights, except that decoding must not stop early, so end-of-text is switched off.
Prints one JSON object. `python benchmarks/bench_generation.py [--quick] [--device cuda] [--threads 1] [--compare-packing]`
"""

from __future__ import annotations

import argparse
import json
import platform
import time

import torch

from ptl_gpt2.generation import generate
from ptl_gpt2.model import GPT2, GPT2Config
from ptl_gpt2.model.checkpoint import to_hf_state_dict


def timed(fn, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def ours(model, prompts, new_tokens: int, use_cache: bool, device: torch.device) -> tuple[float, list[list[int]]]:
    result = {}

    def run():
        result["out"] = generate(model, prompts, max_new_tokens=new_tokens, eos_token_id=None, use_cache=use_cache)

    seconds = timed(run, device)
    return len(prompts) * new_tokens / seconds, result["out"].token_ids


def hugging_face(model: GPT2, prompts, new_tokens: int, device: torch.device) -> dict:
    """HF's GPT2LMHeadModel with our weights: tokens/s and whether its greedy tokens equal ours."""
    try:
        from transformers import GPT2Config as HFConfig
        from transformers import GPT2LMHeadModel
    except ImportError:
        return {"skipped": "transformers is not installed"}
    hf = GPT2LMHeadModel(HFConfig(**model.config.to_hf_dict())).to(device).eval()
    missing, unexpected = hf.load_state_dict(to_hf_state_dict(model), strict=False)
    assert not unexpected and all(k == "lm_head.weight" or k.endswith(".attn.bias") for k in missing), missing
    hf.tie_weights()
    ids = torch.tensor(prompts, device=device)
    kwargs = dict(
        attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=new_tokens,
        min_new_tokens=new_tokens, pad_token_id=50256,
    )  # fmt: skip
    with torch.inference_mode():
        hf.generate(ids, **{**kwargs, "max_new_tokens": 4, "min_new_tokens": 4})  # warm-up
        result = {}
        seconds = timed(lambda: result.setdefault("out", hf.generate(ids, **kwargs)), device)
    return {"tokens_per_s": len(prompts) * new_tokens / seconds, "tokens": result["out"][:, ids.size(1) :].tolist()}


def _prefixes(rows: list[list[int]], n: int) -> list[list[int]]:
    return [r[:n] for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--prompt-tokens", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 12])
    parser.add_argument("--no-cache-new-tokens", type=int, default=None,
                        help="new tokens for the slow no-cache runs (default: --new-tokens; --quick: 32)")  # fmt: skip
    parser.add_argument("--quick", action="store_true", help="no-cache runs decode 32 tokens only")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-hf", action="store_true", help="skip the Hugging Face comparison")
    parser.add_argument("--threads", type=int, help="torch CPU threads (on a busy machine 1 avoids spinning threads)")
    parser.add_argument("--compare-packing", action="store_true",
                        help="also decode with torch.backends.mkldnn.enabled = False: F.linear instead of packed oneDNN linears")  # fmt: skip
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    no_cache_tokens = args.no_cache_new_tokens or (32 if args.quick else args.new_tokens)
    device = torch.device(args.device)

    torch.manual_seed(0)
    model = GPT2(GPT2Config.from_name(args.preset)).to(device).eval()
    prompts_of = {
        b: torch.randint(0, 50256, (b, args.prompt_tokens), generator=torch.Generator().manual_seed(b)).tolist()
        for b in args.batch_sizes
    }
    generate(model, prompts_of[args.batch_sizes[0]], max_new_tokens=4, eos_token_id=None)  # warm-up

    results = []
    for b, prompts in prompts_of.items():
        cached, cached_ids = ours(model, prompts, args.new_tokens, True, device)
        uncached, uncached_ids = ours(model, prompts, no_cache_tokens, False, device)
        row = {}
        if args.compare_packing:  # generate packs batches of 2+ rows only (docs/generation.md, "Speed on CPU")
            torch.backends.mkldnn.enabled, was_enabled = False, torch.backends.mkldnn.enabled
            plain, plain_ids = ours(model, prompts, args.new_tokens, True, device)
            torch.backends.mkldnn.enabled = was_enabled
            row = {
                "plain_linear_tokens_per_s": round(plain, 2),
                "packing_speedup": round(cached / plain, 2),
                "same_tokens_plain_linear": plain_ids == cached_ids,
            }
        results.append(
            {
                "batch": b,
                "new_tokens": args.new_tokens,
                "kv_cache_tokens_per_s": round(cached, 2),
                "no_cache_new_tokens": no_cache_tokens,
                "no_cache_tokens_per_s": round(uncached, 2),
                "cache_speedup": round(cached / uncached, 2),
                # Same tokens either way (up to float ties), over the shorter horizon.
                "same_tokens": _prefixes(cached_ids, no_cache_tokens) == _prefixes(uncached_ids, args.new_tokens),
                **row,
            }
        )
    report = {
        "benchmark": "greedy decoding, random-weight model",
        "preset": args.preset,
        "prompt_tokens": args.prompt_tokens,
        "device": str(device) if device.type != "cuda" else torch.cuda.get_device_name(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "results": results,
    }
    if not args.no_hf:
        prompts = prompts_of.get(1) or [prompts_of[args.batch_sizes[0]][0]]
        hf = hugging_face(model, prompts, args.new_tokens, device)
        if "tokens" in hf:
            ours_1, ours_ids = ours(model, prompts, args.new_tokens, True, device)
            hf_ids = hf.pop("tokens")
            agree = next((i for i, (a, c) in enumerate(zip(ours_ids[0], hf_ids[0])) if a != c), len(hf_ids[0]))
            hf = {
                "batch": 1,
                "hf_tokens_per_s": round(hf["tokens_per_s"], 2),
                "ours_tokens_per_s": round(ours_1, 2),
                "ours_over_hf": round(ours_1 / hf["tokens_per_s"], 3),
                "greedy_tokens_equal_to_hf": agree,  # how many leading tokens match HF's
            }
        report["hugging_face"] = hf
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    main()
