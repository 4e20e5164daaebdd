"""Decoding for the GPT-2 backbone: greedy, sampling (temperature, top-k, top-p), repetition penalty,
best-of-n and beam search, batched over left-padded prompts and driven by the KV cache.

`generate(model, prompts)` works on token ids; `generate_text(model, tokenizer, texts)` wraps it with
the tokenizer and stop strings. Both return a `GenerationOutput` with the new tokens of each prompt and
their log-probabilities under the model.

Conventions (see docs/generation.md):
- Logits are changed in the order repetition penalty -> temperature -> top-k -> top-p, then sampled.
- `logprobs` are always those of the unmodified model (temperature 1, no penalty, no filtering), so
  they measure how likely the model finds a text, whatever the knobs that produced it; best-of-n
  ranks candidates by their mean.
- A sequence that emits the end-of-text token stops there; that token is returned as its last id
  (with its log-prob), and left out of the decoded text.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .ops.packed_linear import packed_linears
from .tokenizer import EOT, EOT_ID

StopCondition = Callable[[list[int]], bool]

# Batched generation on CPU runs the plain float32 linears through oneDNN with packed weights
# (ops/packed_linear.py) when it decodes at least this many tokens: packing GPT-2 124M takes about
# 0.4 s, which a batch of 12 wins back in a few steps. One row (batch 1, no beams or best-of) runs
# only the LM head through oneDNN, on its weight as it is (no copy): oneDNN reads it on both threads
# where F.linear uses one; the block linears gain less and turned into a loss when other processes
# shared the cores (docs/generation.md, "Speed on CPU").
PACK_MIN_NEW_TOKENS = 16


@dataclass
class GenerationOutput:
    """What `generate` returns, one entry per prompt, in prompt order.

    token_ids: the new tokens only; ends with the end-of-text id when the model stopped on it.
    logprobs: log p(token | everything before it) under the unmodified model, one per new token.
    texts: the decoded new text without end-of-text and stop strings (`generate_text` only).
    """

    token_ids: list[list[int]]
    logprobs: list[list[float]]
    texts: list[str] | None = None

    @property
    def mean_logprobs(self) -> list[float]:
        return [sum(lp) / len(lp) if lp else float("nan") for lp in self.logprobs]


# ----------------------------------------------------------------------------- logits processing
def apply_repetition_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's penalty (Keskar et al., 2019), as Hugging Face applies it: the logit of every token
    already in the sequence (`seen`, bool like `logits`) is divided by `penalty` when positive and
    multiplied by it when negative, so penalty > 1 always makes a repeat less likely."""
    penalized = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, penalized, logits)


def top_k_filter(logits: torch.Tensor, k: int) -> torch.Tensor:
    """Keep the k largest logits of each row (ties with the k-th are kept too); the rest -> -inf."""
    if k >= logits.size(-1):
        return logits
    kth = logits.topk(k, dim=-1).values[..., -1:]  # (..., 1)
    return logits.masked_fill(logits < kth, float("-inf"))


def top_p_filter(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Nucleus filtering (Holtzman et al., 2020): keep the smallest set of most likely tokens whose
    probability reaches p; the rest -> -inf. The most likely token is always kept."""
    if p >= 1.0:
        return logits
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    mass_before = F.pad(probs.cumsum(dim=-1)[..., :-1], (1, 0))  # probability of the tokens ranked above
    remove_sorted = mass_before >= p  # the set already reached p without this token
    remove = remove_sorted.scatter(-1, order, remove_sorted)  # back to vocabulary order
    return logits.masked_fill(remove, float("-inf"))


# ----------------------------------------------------------------------------- the decoding state
class _Decoder:
    """Next-token logits for a batch of growing, left-padded sequences.

    With the KV cache the prompt is run once (prefill) and then one token per step; without it the
    whole sequence is recomputed every step (for tests and the benchmark). Token ids and the padding
    mask live in buffers sized for the final length, so no step allocates them again.
    """

    def __init__(
        self, model: nn.Module, ids: torch.Tensor, mask: torch.Tensor | None, max_new: int, use_cache: bool
    ) -> None:
        B, T0 = ids.shape
        self.model = model
        self.ids = torch.cat([ids, ids.new_zeros(B, max_new)], dim=1)  # (B, T0 + max_new)
        # No padding anywhere: pass no mask, so attention takes its causal fast path.
        self.mask = None if mask is None else torch.cat([mask, mask.new_ones(B, max_new)], dim=1)
        self.length = T0  # tokens in the sequences so far
        self.kv_cache = model.new_kv_cache() if use_cache else None
        if self.kv_cache is not None:
            self.kv_cache.reserve(T0 + max_new)  # write into buffers: no concatenation per step

    def next_logits(self) -> torch.Tensor:
        """Logits (B, V) of the token after the current sequences, in float32."""
        # Cached tokens are not run again; a prefix-tuning cache also holds the learned prefix.
        start = 0 if self.kv_cache is None else self.kv_cache.seq_len - self.kv_cache.prefix_len
        mask = None if self.mask is None else self.mask[:, : self.length]
        hidden = self.model.transformer(self.ids[:, start : self.length], mask, kv_cache=self.kv_cache)
        return self.model.lm_head(hidden[:, -1]).float()  # the head on the last position only

    def append(self, tokens: torch.Tensor) -> None:
        self.ids[:, self.length] = tokens
        self.length += 1

    def reorder(self, index: torch.Tensor) -> None:
        """Continue from rows `index` (beam search)."""
        self.ids = self.ids.index_select(0, index)
        if self.mask is not None:
            self.mask = self.mask.index_select(0, index)
        if self.kv_cache is not None:
            self.kv_cache.reorder(index)


# ----------------------------------------------------------------------------- public API
def generate(
    model: nn.Module,
    prompts: Sequence[Sequence[int]],
    *,
    max_new_tokens: int = 32,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    repetition_penalty: float = 1.0,
    num_beams: int = 1,
    length_penalty: float = 1.0,
    early_stopping: bool = False,
    best_of: int = 1,
    eos_token_id: int | None = EOT_ID,
    seed: int | None = None,
    use_cache: bool = True,
    stop_when: StopCondition | None = None,
) -> GenerationOutput:
    """Continue each prompt (a list of token ids) by up to `max_new_tokens` tokens.

    Greedy by default; `do_sample=True` samples after temperature, top-k and top-p; `num_beams > 1`
    runs beam search (scores divided by length ** length_penalty); `best_of=n` samples n candidates
    per prompt and keeps the one with the highest mean log-prob. `repetition_penalty` applies to all.
    Generation of a sequence ends at `eos_token_id` (None: never) or when `stop_when(new_ids)` says
    so (not with beams). `seed` seeds a private generator, never the global RNG; the same seed, model,
    prompts and knobs give the same output. The model runs in eval mode under inference mode and gets
    its previous mode back. On CPU, batches of more than one row decoding at least
    `PACK_MIN_NEW_TOKENS` tokens run the plain float32 `nn.Linear`s through oneDNN with packed
    weights, and one row runs a plain float32 LM head through oneDNN unpacked (`ops.packed_linear`;
    off switch: `torch.backends.mkldnn.enabled = False`).
    """
    check_decoding_options(
        max_new_tokens=max_new_tokens, do_sample=do_sample, temperature=temperature, top_k=top_k, top_p=top_p,
        repetition_penalty=repetition_penalty, num_beams=num_beams, best_of=best_of, stop_when=stop_when,
    )
    _check_prompts(model, prompts, max_new_tokens, eos_token_id)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    n_rows = len(prompts) * max(num_beams, best_of)  # decoded together each step
    if n_rows > 1:
        packing = packed_linears(model) if max_new_tokens >= PACK_MIN_NEW_TOKENS else nullcontext()
    else:
        packing = packed_linears(model.lm_head, prepack=False)
    try:
        with torch.inference_mode(), packing:
            if num_beams > 1:
                ids, mask = _left_pad(prompts, device)
                return _beam_search(
                    model, ids, mask, max_new_tokens, num_beams, length_penalty, early_stopping,
                    eos_token_id, repetition_penalty, use_cache,
                )  # fmt: skip
            generator = torch.Generator(device=device)
            if seed is None:
                generator.seed()  # a fresh random seed, for this generator only
            else:
                generator.manual_seed(seed)
            rows = [p for p in prompts for _ in range(best_of)]  # best-of-n: candidates are adjacent rows
            ids, mask = _left_pad(rows, device)
            out = _sample(
                model, ids, mask, max_new_tokens, do_sample, temperature, top_k, top_p,
                repetition_penalty, eos_token_id, generator, use_cache, stop_when,
            )  # fmt: skip
            return _keep_best_of(out, best_of) if best_of > 1 else out
    finally:
        model.train(was_training)


def generate_text(
    model: nn.Module,
    tokenizer,
    texts: str | Sequence[str],
    *,
    stop_strings: Sequence[str] = (),
    **options,
) -> GenerationOutput:
    """`generate` on text: encode each prompt, decode each continuation.

    `tokenizer` is a tiktoken `Encoding` (e.g. `ptl_gpt2.tokenizer.gpt2_tokenizer()`); an empty
    prompt starts from `<|endoftext|>`, as GPT-2 does for unconditional text. A continuation ends at
    the first of `stop_strings` to complete in its new text: the text stops before it, the token ids
    (and log-probs) at the token that completed it. Sampling stops such a sequence as soon as the string appears;
    beam search cuts the chosen beam afterwards. `options` are `generate`'s keyword arguments.
    """
    texts = [texts] if isinstance(texts, str) else list(texts)
    prompts = [tokenizer.encode(t, allowed_special={EOT}) or [EOT_ID] for t in texts]
    stops = [s for s in stop_strings if s]
    if stops and options.get("num_beams", 1) == 1:
        # Stop a row once a stop string appears, or when the caller's own condition says so.
        caller_stop = options.get("stop_when")

        def stop_when(new_ids: list[int]) -> bool:
            text = tokenizer.decode(new_ids)
            return any(s in text for s in stops) or (caller_stop is not None and caller_stop(new_ids))

        options["stop_when"] = stop_when
    out = generate(model, prompts, **options)
    eos = options.get("eos_token_id", EOT_ID)
    out.texts = []
    for i, new_ids in enumerate(out.token_ids):
        body = new_ids[:-1] if new_ids and new_ids[-1] == eos else new_ids
        text = tokenizer.decode(body)
        if any(s in text for s in stops):
            # The first stop string to complete ends the output: find the token that completes it.
            n = next(n for n in range(1, len(body) + 1) if any(s in tokenizer.decode(body[:n]) for s in stops))
            text = tokenizer.decode(body[:n])
            text = text[: min(text.find(s) for s in stops if s in text)]
            out.token_ids[i], out.logprobs[i] = new_ids[:n], out.logprobs[i][:n]
        out.texts.append(text)
    return out


# ----------------------------------------------------------------------------- checks
GENERATE_DEFAULTS = {name: p.default for name, p in inspect.signature(generate).parameters.items() if p.default is not p.empty}


class GenerationInputError(ValueError):
    """Prompts or decoding options that `generate` cannot take (the message names the option)."""


def check_decoding_options(**options: Any) -> None:
    """Raise GenerationInputError for options `generate` refuses; needs no model, so configs fail early.

    Takes `generate`'s keywords; unset ones take its defaults, and those not checked here (seed,
    length_penalty, ...) are accepted as they are.
    """
    o = {**GENERATE_DEFAULTS, **options}
    num_beams, best_of, do_sample = o["num_beams"], o["best_of"], o["do_sample"]
    problems = [
        (o["max_new_tokens"] < 1, f"max_new_tokens must be >= 1, got {o['max_new_tokens']}"),
        (do_sample and o["temperature"] <= 0,
         f"temperature must be > 0 when sampling, got {o['temperature']} (use do_sample=False for greedy)"),
        (o["top_k"] is not None and o["top_k"] < 1, f"top_k must be >= 1, got {o['top_k']}"),
        (o["top_p"] is not None and not 0 < o["top_p"] <= 1, f"top_p must be in (0, 1], got {o['top_p']}"),
        (o["repetition_penalty"] <= 0, f"repetition_penalty must be > 0 (1 = off), got {o['repetition_penalty']}"),
        (num_beams < 1 or best_of < 1, f"num_beams and best_of must be >= 1, got {num_beams} and {best_of}"),
        (num_beams > 1 and (do_sample or best_of > 1 or o["stop_when"] is not None),
         "num_beams > 1 is deterministic beam search: it takes no do_sample, best_of or stop_when"),
        (best_of > 1 and not do_sample, "best_of > 1 needs do_sample=True (greedy candidates would all be the same)"),
    ]  # fmt: skip
    for failed, message in problems:
        if failed:
            raise GenerationInputError(message)


def _check_prompts(model, prompts, max_new_tokens, eos_token_id) -> None:
    if isinstance(prompts, torch.Tensor) or not prompts or isinstance(prompts[0], int):
        raise GenerationInputError("prompts must be a non-empty list of token-id lists, e.g. [[464, 3290]]")
    vocab, n_positions = model.config.vocab_size, model.config.n_positions
    for i, p in enumerate(prompts):
        if len(p) == 0:
            raise GenerationInputError(f"prompt {i} is empty; start it with <|endoftext|> ({EOT_ID})")
        if not all(0 <= t < vocab for t in p):
            raise GenerationInputError(f"prompt {i} holds token ids outside [0, {vocab})")
        if len(p) + max_new_tokens > n_positions:
            raise GenerationInputError(
                f"prompt {i} has {len(p)} tokens; with max_new_tokens={max_new_tokens} it exceeds "
                f"the model's n_positions={n_positions}"
            )
    if eos_token_id is not None and not 0 <= eos_token_id < vocab:
        raise GenerationInputError(f"eos_token_id={eos_token_id} is outside the vocabulary [0, {vocab})")


# ----------------------------------------------------------------------------- helpers
def _left_pad(prompts: Sequence[Sequence[int]], device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Token ids (B, T0), left-padded, and the mask (B, T0) of real tokens (None if none is padded)."""
    T0 = max(len(p) for p in prompts)
    ids = torch.zeros((len(prompts), T0), dtype=torch.long)  # the pad id (0) is never attended to
    mask = torch.zeros((len(prompts), T0), dtype=torch.long)
    for i, p in enumerate(prompts):
        ids[i, T0 - len(p) :] = torch.tensor(p, dtype=torch.long)
        mask[i, T0 - len(p) :] = 1
    padded = any(len(p) < T0 for p in prompts)
    return ids.to(device), mask.to(device) if padded else None


def _seen_tokens(ids: torch.Tensor, mask: torch.Tensor | None, vocab_size: int) -> torch.Tensor:
    """(B, V) bool: which tokens occur in each prompt (padding excluded), for the repetition penalty."""
    real = torch.ones_like(ids) if mask is None else mask.long()
    counts = torch.zeros(ids.size(0), vocab_size, dtype=torch.long, device=ids.device)
    return counts.scatter_add_(1, ids, real) > 0


def _sample(
    model, ids, mask, max_new, do_sample, temperature, top_k, top_p,
    repetition_penalty, eos, generator, use_cache, stop_when,
) -> GenerationOutput:  # fmt: skip
    """Greedy or sampled decoding, one token per step for every row."""
    B = ids.size(0)
    decoder = _Decoder(model, ids, mask, max_new, use_cache)
    seen = _seen_tokens(ids, mask, model.config.vocab_size) if repetition_penalty != 1.0 else None
    pad = 0 if eos is None else eos  # what finished rows are fed
    tokens = ids.new_full((B, max_new), pad)
    logprobs = torch.zeros(B, max_new, device=ids.device)
    lengths = torch.full((B,), max_new, device=ids.device)
    finished = torch.zeros(B, dtype=torch.bool, device=ids.device)
    host_tokens: list[list[int]] = [[] for _ in range(B)]  # only for stop_when
    steps = 0
    for step in range(max_new):
        logits = decoder.next_logits()  # (B, V)
        scores = logits if seen is None else apply_repetition_penalty(logits, seen, repetition_penalty)
        if do_sample:
            scores = scores / temperature
            if top_k is not None:
                scores = top_k_filter(scores, top_k)
            if top_p is not None:
                scores = top_p_filter(scores, top_p)
            token = torch.multinomial(scores.softmax(dim=-1), 1, generator=generator).squeeze(1)  # (B,)
        else:
            token = scores.argmax(dim=-1)  # (B,)
        token = token.masked_fill(finished, pad)  # finished rows only grow padding
        tokens[:, step] = token
        logprobs[:, step] = logits.log_softmax(dim=-1).gather(1, token[:, None]).squeeze(1)
        decoder.append(token)
        if seen is not None:
            seen.scatter_(1, token[:, None], True)
        steps = step + 1
        if eos is None and stop_when is None:
            continue  # nothing can end a row early: no host sync at all
        just_finished = ~finished & (token == eos) if eos is not None else torch.zeros_like(finished)
        if stop_when is not None:
            for b, (t, done) in enumerate(zip(token.tolist(), finished.tolist())):
                if not done:
                    host_tokens[b].append(t)
                    if stop_when(host_tokens[b]):
                        just_finished[b] = True
        lengths = torch.where(just_finished, steps, lengths)
        finished |= just_finished
        if finished.all():  # the one host sync per step
            break
    lengths = lengths.clamp(max=steps).tolist()
    return GenerationOutput(
        token_ids=[row[:n] for row, n in zip(tokens.tolist(), lengths)],
        logprobs=[row[:n] for row, n in zip(logprobs.tolist(), lengths)],
    )


def _keep_best_of(out: GenerationOutput, n: int) -> GenerationOutput:
    """Rows i*n .. i*n+n-1 are prompt i's candidates: keep the one with the highest mean log-prob."""
    means = out.mean_logprobs
    best = [max(range(i, i + n), key=means.__getitem__) for i in range(0, len(means), n)]
    return GenerationOutput([out.token_ids[j] for j in best], [out.logprobs[j] for j in best])


class _Hypotheses:
    """The best finished beams of one prompt, scored sum log-prob / length ** length_penalty."""

    def __init__(self, num_beams: int, length_penalty: float, early_stopping: bool) -> None:
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, length_penalty, early_stopping
        self.items: list[tuple[float, list[int], list[float]]] = []  # (score, tokens, model log-probs)

    def add(self, sum_logprob: float, tokens: list[int], logprobs: list[float]) -> None:
        self.items.append((sum_logprob / len(tokens) ** self.length_penalty, tokens, logprobs))
        self.items.sort(key=lambda h: h[0], reverse=True)
        del self.items[self.num_beams :]

    def is_done(self, best_running_sum: float, length: int) -> bool:
        """Enough finished beams, and (unless early stopping) none running can still beat them.
        Like Hugging Face, "can still beat" compares the running beam's score at its current length."""
        if len(self.items) < self.num_beams:
            return False
        if self.early_stopping:
            return True
        return best_running_sum / length**self.length_penalty <= self.items[-1][0]


def _beam_search(
    model, ids, mask, max_new, K, length_penalty, early_stopping, eos, repetition_penalty, use_cache
) -> GenerationOutput:
    """Beam search over K beams per prompt (rows b*K .. b*K+K-1), Hugging Face's variant: each step
    keeps the 2K best extensions, an end-of-text among the K best finishes a hypothesis, the others
    continue. Beams are scored with log-probs after the repetition penalty; the returned log-probs are
    the model's own."""
    B = ids.size(0)
    ids = ids.repeat_interleave(K, dim=0)  # (B*K, T0)
    mask = None if mask is None else mask.repeat_interleave(K, dim=0)
    decoder = _Decoder(model, ids, mask, max_new, use_cache)
    seen = _seen_tokens(ids, mask, model.config.vocab_size) if repetition_penalty != 1.0 else None
    pad = 0 if eos is None else eos  # what finished rows are fed
    tokens = ids.new_full((B * K, max_new), pad)
    token_logprobs = torch.zeros(B * K, max_new, device=ids.device)
    beam_scores = torch.zeros(B, K, device=ids.device)
    beam_scores[:, 1:] = float("-inf")  # all beams start equal: let only the first one expand
    beam_scores = beam_scores.view(-1)  # (B*K,)
    hypotheses = [_Hypotheses(K, length_penalty, early_stopping) for _ in range(B)]
    done = [False] * B
    steps = 0
    for step in range(max_new):
        logits = decoder.next_logits()  # (B*K, V)
        model_logprobs = logits.log_softmax(dim=-1)
        scored = model_logprobs
        if seen is not None:
            scored = apply_repetition_penalty(logits, seen, repetition_penalty).log_softmax(dim=-1)
        V = scored.size(-1)
        candidates = (beam_scores[:, None] + scored).view(B, K * V)
        top_scores, top_index = candidates.topk(min(2 * K, K * V), dim=1)  # (B, 2K), best first
        scores_h, rows_h, tokens_h = top_scores.tolist(), (top_index // V).tolist(), (top_index % V).tolist()
        next_rows, next_tokens, next_scores = [], [], []
        for b in range(B):
            if done[b]:  # keep its beams alive with padding until every prompt is done
                next_rows += range(b * K, b * K + K)
                next_tokens += [pad] * K
                next_scores += [0.0] * K
                continue
            kept = 0
            for rank, (score, beam, token) in enumerate(zip(scores_h[b], rows_h[b], tokens_h[b])):
                row = b * K + beam
                if token == eos:
                    if rank < K:  # as in HF: an end-of-text outside the K best is not a hypothesis
                        hypotheses[b].add(
                            score,
                            tokens[row, :step].tolist() + [eos],
                            token_logprobs[row, :step].tolist() + [model_logprobs[row, eos].item()],
                        )
                    continue
                next_rows.append(row)
                next_tokens.append(token)
                next_scores.append(score)
                kept += 1
                if kept == K:
                    break
            done[b] = hypotheses[b].is_done(max(next_scores[-K:]), step + 1)
        index = torch.tensor(next_rows, device=ids.device)
        new_tokens = torch.tensor(next_tokens, device=ids.device)
        beam_scores = torch.tensor(next_scores, device=ids.device)
        tokens = tokens.index_select(0, index)
        token_logprobs = token_logprobs.index_select(0, index)
        tokens[:, step] = new_tokens
        token_logprobs[:, step] = model_logprobs[index, new_tokens]
        decoder.reorder(index)
        decoder.append(new_tokens)
        if seen is not None:
            seen = seen.index_select(0, index).scatter_(1, new_tokens[:, None], True)
        steps = step + 1
        if all(done):
            break
    # Prompts still running at the length limit: their running beams become hypotheses too.
    scores_h = beam_scores.tolist()
    for b in range(B):
        if not done[b]:
            for row in range(b * K, b * K + K):
                hypotheses[b].add(scores_h[row], tokens[row, :steps].tolist(), token_logprobs[row, :steps].tolist())
    best = [h.items[0] for h in hypotheses]
    return GenerationOutput(token_ids=[t for _, t, _ in best], logprobs=[lp for _, _, lp in best])
