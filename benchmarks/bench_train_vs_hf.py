"""Our training steps and greedy generation against Hugging Face GPT-2 on this machine; prints JSON.

    python benchmarks/bench_train_vs_hf.py                      # 124M, batch 8 x 128, fp32
    python benchmarks/bench_train_vs_hf.py --only lm,generate --warmup 1 --steps 3
    python benchmarks/bench_train_vs_hf.py --preset tiny --steps 2 --new-tokens 8   # smoke test

Same config (random weights, dropout 0.1 as GPT-2 fine-tunes), same batch of random tokens with a
full attention mask, same optimizer (ptl_gpt2.optim.AdamW: torch's fused kernel, which is also the Hugging Face
Trainer's default `adamw_torch_fused`), same process. Ours and Hugging Face's steps
are *interleaved* (ours, HF, ours, HF, ...) after `--warmup` steps each, so load from other jobs on
a shared machine falls on both alike; tokens/s come from the median step time. Rows:

    lm              LanguageModel.loss (fused head + cross-entropy) vs GPT2LMHeadModel(labels=...)
    classification  SentimentClassifier (head on hidden states)   vs GPT2ForSequenceClassification
    cloze           ParaphraseDetection (2 logits at 1 position) vs GPT2LMHeadModel full logits, pick 2
    lora            LoRA r=8 on c_attn (ptl_gpt2.peft.inject_lora) vs peft LoRA r=8 on c_attn, LM loss
    generate        greedy, KV cache, 32-token prompt, batch 1 and 12: ptl_gpt2.generation.generate
                    vs GPT2LMHeadModel.generate
    memory          peak RSS during 2 LM training steps (weights included, import peaks excluded by
                    resetting VmHWM), each mode in its own subprocess: ours full / ours LoRA /
                    HF full / peft LoRA

Goals (issue 12) are printed next to each ratio.
"""

from __future__ import annotations

import argparse
import gc
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F

GOALS = {"lm": 1.0, "classification": 1.3, "cloze": 1.3, "lora": 1.1, "generate_batch1": 1.15}
YES_NO = [3919, 8505]


# ----------------------------------------------------------------------------- models
def hf_config(preset: str, **extra):
    from transformers import GPT2Config as HFConfig

    from ptl_gpt2.model import GPT2Config

    ours = GPT2Config.from_name(preset)
    return HFConfig(**{**ours.to_hf_dict(), **extra})


def batch(preset: str, B: int, T: int) -> dict:
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, 50256, (B, T), generator=g)  # never the pad/eot id 50256
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids), "labels": torch.randint(0, 2, (B,), generator=g)}


def train_step(module: torch.nn.Module, loss_fn: Callable[[], torch.Tensor], lr: float = 1e-5) -> Callable[[], None]:
    from ptl_gpt2.optim import AdamW

    optimizer = AdamW([(n, p) for n, p in module.named_parameters() if p.requires_grad], lr=lr)
    module.train()

    def step() -> None:
        optimizer.zero_grad(set_to_none=True)
        loss_fn().backward()
        optimizer.step()

    return step


def pair(kind: str, preset: str, b: dict) -> tuple[Callable[[], None], Callable[[], None], dict]:
    """(our step, HF step, info) for one training row."""
    from transformers import GPT2ForSequenceClassification, GPT2LMHeadModel

    from ptl_gpt2.tasks import LanguageModel, ParaphraseDetection, SentimentClassifier

    torch.manual_seed(0)
    info: dict = {}
    if kind in ("lm", "lora"):
        ours = LanguageModel(preset=preset)
        hf = GPT2LMHeadModel(hf_config(preset))
        if kind == "lora":
            from peft import LoraConfig, get_peft_model

            from ptl_gpt2.peft import inject_lora

            ours.model.requires_grad_(False)
            inject_lora(ours.model, ["c_attn"], r=8, alpha=16)
            hf = get_peft_model(hf, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"], fan_in_fan_out=True,
                                               lora_dropout=0.0, task_type="CAUSAL_LM"))
        ours_loss = lambda: ours.loss(b)  # noqa: E731
        hf_loss = lambda: hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["input_ids"]).loss  # noqa: E731
    elif kind == "classification":
        ours = SentimentClassifier(num_classes=2, preset=preset)
        hf = GPT2ForSequenceClassification(hf_config(preset, num_labels=2, pad_token_id=50256))
        ours_loss = lambda: ours.loss(b)  # noqa: E731
        hf_loss = lambda: hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"], labels=b["labels"]).loss  # noqa: E731
    elif kind == "cloze":
        ours = ParaphraseDetection(preset=preset)
        hf = GPT2LMHeadModel(hf_config(preset))
        ours_loss = lambda: ours.loss(b)  # noqa: E731

        def hf_loss() -> torch.Tensor:  # what a plain HF port does: all logits, then pick 2 at the last token
            logits = hf(input_ids=b["input_ids"], attention_mask=b["attention_mask"]).logits  # (B, T, V)
            last = b["attention_mask"].sum(1) - 1
            return F.cross_entropy(logits[torch.arange(len(last)), last][:, YES_NO], b["labels"])
    else:
        raise ValueError(kind)
    info["hf_attn_implementation"] = getattr(hf.config, "_attn_implementation", None)
    info["trainable_params"] = {"ours": sum(p.numel() for p in ours.parameters() if p.requires_grad),
                                "hf": sum(p.numel() for p in hf.parameters() if p.requires_grad)}
    return train_step(ours, ours_loss), train_step(hf, hf_loss), info


def interleaved(ours: Callable[[], None], hf: Callable[[], None], warmup: int, steps: int) -> tuple[list[float], list[float], dict]:
    """Seconds per call of each, alternating ours and HF so both see the same machine load.

    Also the median minor page faults per timed call of each: a step whose big tensors glibc maps
    fresh from the kernel pays ~1 s of page faults per GB. Which tensors those are depends on the
    process's heap history (earlier rows leave reusable free space), so a row run alone can read
    differently from the same row after others; the counts show when that happens.
    """
    times: tuple[list[float], list[float]] = ([], [])
    faults: tuple[list[int], list[int]] = ([], [])
    for i in range(warmup + steps):
        for fn, out, flt in ((ours, times[0], faults[0]), (hf, times[1], faults[1])):
            before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            start = time.perf_counter()
            fn()
            if i >= warmup:
                out.append(time.perf_counter() - start)
                flt.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    page_faults = {"ours_minor_page_faults_per_step": int(statistics.median(faults[0])),
                   "hf_minor_page_faults_per_step": int(statistics.median(faults[1]))}
    return times[0], times[1], page_faults


def row(ours_s: list[float], hf_s: list[float], work: float, goal: float | None, unit: str = "tokens_per_s") -> dict:
    ours_rate, hf_rate = work / statistics.median(ours_s), work / statistics.median(hf_s)
    out = {
        f"ours_{unit}": round(ours_rate, 2),
        f"hf_{unit}": round(hf_rate, 2),
        "ratio": round(ours_rate / hf_rate, 3),
        # the fastest step of each: the least disturbed by other jobs on a shared machine
        "ratio_best_step": round(min(hf_s) / min(ours_s), 3),
        "ours_step_s": [round(t, 3) for t in ours_s],
        "hf_step_s": [round(t, 3) for t in hf_s],
    }
    if goal is not None:
        out.update(goal=goal, meets_goal=out["ratio"] >= goal)
    return out


# ----------------------------------------------------------------------------- generation
def generation_rows(preset: str, new_tokens: int, warmup: int, steps: int) -> dict:
    from transformers import GPT2LMHeadModel

    from ptl_gpt2.generation import generate
    from ptl_gpt2.model import GPT2, GPT2Config

    torch.manual_seed(0)
    ours = GPT2(GPT2Config.from_name(preset)).eval()
    hf = GPT2LMHeadModel(hf_config(preset)).eval()
    out = {}
    for B in (1, 12):
        prompts = torch.randint(0, 50256, (B, 32), generator=torch.Generator().manual_seed(B))

        def run_ours() -> None:
            generate(ours, prompts.tolist(), max_new_tokens=new_tokens, eos_token_id=None)

        def run_hf() -> None:
            with torch.inference_mode():
                hf.generate(prompts, attention_mask=torch.ones_like(prompts), max_new_tokens=new_tokens,
                            min_new_tokens=new_tokens, do_sample=False, pad_token_id=50256)

        ours_s, hf_s, _ = interleaved(run_ours, run_hf, warmup, steps)
        out[f"generate_batch{B}"] = row(ours_s, hf_s, B * new_tokens, GOALS.get(f"generate_batch{B}"))
    b1, b12 = out["generate_batch1"]["ours_tokens_per_s"], out["generate_batch12"]["ours_tokens_per_s"]
    out["ours_batch12_over_batch1"] = {"value": round(b12 / b1, 2), "goal": 6.0, "meets_goal": b12 / b1 >= 6.0}
    return out


# ----------------------------------------------------------------------------- memory (subprocesses)
def memory_child(impl: str, mode: str, preset: str, B: int, T: int) -> None:
    """Two LM training steps; print the process's peak RSS in MB (Linux ru_maxrss is in KiB)."""
    b = batch(preset, B, T)
    torch.manual_seed(0)
    if impl == "ours":
        from ptl_gpt2.tasks import LanguageModel

        module = LanguageModel(preset=preset)
        if mode == "lora":
            from ptl_gpt2.peft import inject_lora

            module.model.requires_grad_(False)
            inject_lora(module.model, ["c_attn"], r=8, alpha=16)
        loss = lambda: module.loss(b)  # noqa: E731
    else:
        from transformers import GPT2LMHeadModel

        module = GPT2LMHeadModel(hf_config(preset))
        if mode == "lora":
            from peft import LoraConfig, get_peft_model

            module = get_peft_model(module, LoraConfig(r=8, lora_alpha=16, target_modules=["c_attn"],
                                                       fan_in_fan_out=True, task_type="CAUSAL_LM"))
        loss = lambda: module(input_ids=b["input_ids"], labels=b["input_ids"]).loss  # noqa: E731
    step = train_step(module, loss)
    gc.collect()
    before = current_rss_kib()  # libraries + weights (+ data), before any step
    # Forget the peak of imports and model building (Linux >= 4.0); the weights stay resident and count.
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    for _ in range(2):
        step()
    print(json.dumps({"peak_rss_mb": round(vm_hwm_kib() / 1024, 1), "before_steps_mb": round(before / 1024, 1)}))


def vm_hwm_kib() -> int:
    """The process's peak resident set size since the last reset, in KiB."""
    return _status_kib("VmHWM:")


def current_rss_kib() -> int:
    return _status_kib("VmRSS:")


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field))


def memory_rows(preset: str, B: int, T: int) -> dict:
    out = {}
    for impl, mode in (("ours", "full"), ("ours", "lora"), ("hf", "full"), ("hf", "lora")):
        cmd = [sys.executable, __file__, "--memory-child", f"{impl},{mode}", "--preset", preset,
               "--batch", str(B), "--seq", str(T), "--threads", str(torch.get_num_threads())]
        done = subprocess.run(cmd, capture_output=True, text=True, check=True)
        child = json.loads(done.stdout.strip().splitlines()[-1])
        out[f"{impl}_{mode}_peak_rss_mb"] = child["peak_rss_mb"]
        out[f"{impl}_{mode}_rss_before_steps_mb"] = child["before_steps_mb"]
    ratio = out["ours_lora_peak_rss_mb"] / out["ours_full_peak_rss_mb"]
    out["ours_lora_over_ours_full"] = {"value": round(ratio, 3), "goal": 0.6, "meets_goal": ratio <= 0.6}
    out["hf_lora_over_hf_full"] = round(out["hf_lora_peak_rss_mb"] / out["hf_full_peak_rss_mb"], 3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="gpt2")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--seq", type=int, default=128)
    parser.add_argument("--warmup", type=int, default=2, help="untimed steps of each, first")
    parser.add_argument("--steps", type=int, default=4, help="timed steps of each, interleaved")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--only", default="lm,classification,cloze,lora,generate,memory")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's). 1 is steadier on a machine shared with other jobs")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(*args.memory_child.split(","), args.preset, args.batch, args.seq)
        return
    import transformers

    from ptl_gpt2.callbacks.throughput import gpt2_flops
    from ptl_gpt2.model import GPT2Config

    only = args.only.split(",")
    config = GPT2Config.from_name(args.preset)
    tokens = args.batch * args.seq
    result: dict = {
        "benchmark": "train_vs_hf",
        "preset": args.preset,
        "batch": [args.batch, args.seq],
        "dtype": "float32",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "machine": platform.processor() or platform.machine(),
        "load_average_start": [round(x, 2) for x in __import__("os").getloadavg()],
        "timing": f"{args.warmup} warm-up + {args.steps} timed steps each, ours and HF interleaved; ratio from the median step, ratio_best_step from the fastest",
    }
    b = batch(args.preset, args.batch, args.seq)
    flops = {  # per training step, for the achieved GFLOP/s
        "lm": gpt2_flops(config, args.batch, args.seq),
        "classification": gpt2_flops(config, args.batch, args.seq, lm_head=False),
        "cloze": gpt2_flops(config, args.batch, args.seq, lm_head=False),
        "lora": gpt2_flops(config, args.batch, args.seq, weight_grads=False),
    }
    for kind in ("lm", "classification", "cloze", "lora"):
        if kind not in only:
            continue
        ours, hf, info = pair(kind, args.preset, b)
        ours_s, hf_s, page_faults = interleaved(ours, hf, args.warmup, args.steps)
        result[kind] = {**row(ours_s, hf_s, tokens, GOALS[kind]), **info, **page_faults,
                        "ours_gflops_per_s": round(flops[kind] / statistics.median(ours_s) / 1e9, 1)}
        del ours, hf
        gc.collect()
        if kind in ("classification", "cloze") and "lm" in result:
            # The baseline "HF full fine-tuning" is its LM step: the vocabulary projection we skip.
            result[kind]["ratio_vs_hf_lm_step"] = round(result[kind]["ours_tokens_per_s"] / result["lm"]["hf_tokens_per_s"], 3)
        print(f"# {kind}: {result[kind]['ratio']}x", file=sys.stderr, flush=True)
    if "generate" in only:
        result["generate"] = generation_rows(args.preset, args.new_tokens, max(1, args.warmup - 1), args.steps)
    if "memory" in only:
        result["memory"] = memory_rows(args.preset, args.batch, args.seq)
    result["load_average_end"] = [round(x, 2) for x in __import__("os").getloadavg()]
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
