"""`ptl-gpt2 synth sonnets`: ask a teacher LLM for Shakespearean sonnets, check them, write JSONL.

    ptl-gpt2 synth sonnets --n 1000 --out synthetic.jsonl --base-url http://localhost:11434/v1 --model llama3
    ptl-gpt2 fit --config configs/sonnet/full.yaml \\
        --data.init_args.extra_train_files '[/abs/path/synthetic.jsonl]' --data.init_args.extra_weight 1.0

Any OpenAI-compatible chat-completions server works (Ollama, vLLM, llama.cpp server, OpenAI,
Gemini's compatible endpoint). The API key comes from --api-key or OPENAI_API_KEY and is only sent
in the Authorization header, never printed or written. Rerunning the same command resumes: ids
already in the output are skipped. Prints a JSON summary (counts, token usage, perfect rate).
Details: docs/synth.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from ..synth import DEFAULT_THEMES, ChatClient, FatalChatError, RateLimiter, generate_sonnets


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptl-gpt2 synth", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("sonnets", help="generate sonnets with a teacher model")
    p.add_argument("--n", type=int, required=True, help="number of requests (ids 0..n-1)")
    p.add_argument("--out", required=True, help="output JSONL (appended to; rerun to resume)")
    p.add_argument("--base-url", default=os.environ.get("OPENAI_BASE_URL", "http://localhost:11434/v1"),
                   help="API base URL, up to /v1 (default: $OPENAI_BASE_URL, else local Ollama)")
    p.add_argument("--model", default=os.environ.get("OPENAI_MODEL"), help="teacher model (default: $OPENAI_MODEL)")
    p.add_argument("--api-key", default=None, help="API key (default: $OPENAI_API_KEY; local servers need none)")
    p.add_argument("--teacher", default=None, help="name stored in each record's 'teacher' (default: --model)")
    p.add_argument("--concurrency", type=int, default=4, help="requests in flight at once")
    p.add_argument("--rate", type=float, default=None, help="at most this many requests per second")
    p.add_argument("--timeout", type=float, default=120.0, help="seconds per request")
    p.add_argument("--max-retries", type=int, default=5, help="retries on 429/5xx/timeouts/malformed replies")
    p.add_argument("--backoff", type=float, default=1.0, help="first retry delay in seconds (then doubles)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--max-tokens", type=int, default=512)
    p.add_argument("--only-perfect", action="store_true",
                   help="keep only perfect sonnets in --out (others go to <out>.rejected.jsonl)")
    p.add_argument("--themes", nargs="+", default=None,
                   help="themes to draw from (default: 40 built-in); one @FILE reads one theme per line")
    p.add_argument("--seed", type=int, default=0, help="picks each id's theme and the request seed")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--summary", default=None, help="also write the JSON summary to this file")
    return parser


def read_themes(values: list[str] | None) -> tuple[str, ...]:
    if not values:
        return DEFAULT_THEMES
    if len(values) == 1 and values[0].startswith("@"):
        path = Path(values[0][1:])
        if not path.is_file():
            raise FileNotFoundError(f"--themes: {path} does not exist")
        values = [line.strip() for line in path.read_text().splitlines()]
    themes = tuple(v for v in values if v)
    if not themes:
        raise ValueError("--themes: no themes given")
    return themes


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.model:
        parser.error("--model: name the teacher model (or set OPENAI_MODEL)")
    if args.n < 0 or args.concurrency < 1:
        parser.error(f"--n must be >= 0 and --concurrency >= 1 (got {args.n}, {args.concurrency})")
    try:
        themes = read_themes(args.themes)
    except ValueError as err:  # no themes in the list or file
        parser.error(str(err))
    client = ChatClient(
        base_url=args.base_url, model=args.model, api_key=args.api_key or os.environ.get("OPENAI_API_KEY"),
        timeout=args.timeout, max_retries=args.max_retries, backoff=args.backoff,
        rate_limiter=RateLimiter(args.rate) if args.rate else None,
    )
    try:
        summary = generate_sonnets(
            client, args.out, args.n, teacher=args.teacher, themes=themes, seed=args.seed,
            concurrency=args.concurrency, only_perfect=args.only_perfect, temperature=args.temperature,
            max_tokens=args.max_tokens, progress=not args.no_progress,
        )
    except FatalChatError as err:  # bad key / URL / model: what is written so far stays; rerun resumes
        sys.exit(f"ptl-gpt2 synth: error: {client.scrub(str(err))}")
    text = json.dumps({"out": str(args.out), "teacher": args.teacher or args.model, **summary.to_dict()}, indent=2)
    print(text)
    if args.summary:
        Path(args.summary).write_text(text + "\n")
    if summary.failed:
        print(f"synth: {summary.failed} requests failed; rerun the same command to retry them", file=sys.stderr)


if __name__ == "__main__":
    main()
