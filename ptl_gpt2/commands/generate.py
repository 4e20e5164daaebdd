"""`ptl-gpt2 generate`: continue prompts with a trained model (decoding options as in docs/generation.md).

    ptl-gpt2 generate --checkpoint runs/.../last.ckpt --prompt "Shall I compare thee" --do-sample --top-p 0.9
    ptl-gpt2 generate --checkpoint hf_dir/ --prompts-file sonnets_held_out.txt --lines 14 \\
        --sonnets-out generated_sonnets.txt

A prompts file uses the CS224N `sonnets.txt` layout: an optional header, then blocks that start with
a line holding only a number, followed by the prompt's lines. `--sonnets-out` writes the CS224N
`generated_sonnets.txt` layout (each number, then its prompt and continuation).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from ..generation import GenerationInputError, check_decoding_options, generate_text
from ..tokenizer import gpt2_tokenizer
from .checkpoints import load_backbone


def read_prompts(args: argparse.Namespace) -> tuple[list[str], list[str]]:
    """(ids, prompts): from --prompt (ids 0, 1, ...), or from a numbered prompts file (ids = numbers)."""
    if args.prompt is not None:
        return [str(i) for i in range(len(args.prompt))], [p.replace("\\n", "\n") for p in args.prompt]
    from datamodules.sonnets import read_sonnets  # the layout's one parser (clear errors, numbers kept)

    path = Path(args.prompts_file)
    if not path.is_file():
        raise FileNotFoundError(f"--prompts-file: {path} does not exist")
    sonnets = read_sonnets(path, "--prompts-file")
    return [str(s.number) for s in sonnets], [s.text for s in sonnets]  # each line ends in "\n"


def complete_lines(text: str) -> int:
    """Non-blank lines that a newline has ended."""
    return sum(1 for line in text.split("\n")[:-1] if line.strip())


def first_lines(text: str, n: int) -> str:
    """The first n non-blank lines, each ended by a newline."""
    return "".join(line + "\n" for line in [line for line in text.split("\n") if line.strip()][:n])


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ptl-gpt2 generate", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--checkpoint", required=True,
                        help="a Lightning .ckpt of any task (LoRA merged, quantisation re-applied) or a Hugging Face GPT-2 dir/file")
    parser.add_argument("--base", help="the base model of an adapter-only checkpoint (default: its model.pretrained)")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--prompt", action="append", help="a prompt (repeatable; \\n for new lines)")
    source.add_argument("--prompts-file", help="numbered prompts in the CS224N sonnets.txt layout")
    decoding = parser.add_argument_group("decoding (see docs/generation.md)")
    decoding.add_argument("--max-new-tokens", type=int, default=128)
    decoding.add_argument("--do-sample", action="store_true", help="sample instead of greedy decoding")
    decoding.add_argument("--temperature", type=float, default=1.0)
    decoding.add_argument("--top-k", type=int)
    decoding.add_argument("--top-p", type=float)
    decoding.add_argument("--repetition-penalty", type=float, default=1.0)
    decoding.add_argument("--num-beams", type=int, default=1)
    decoding.add_argument("--length-penalty", type=float, default=1.0, help="beam score = sum log-prob / length**this")
    decoding.add_argument("--early-stopping", action="store_true", help="beam search ends once num_beams finished")
    decoding.add_argument("--best-of", type=int, default=1, help="sample n, keep the highest mean log-prob")
    decoding.add_argument("--seed", type=int, default=0)
    decoding.add_argument("--stop", action="append", default=[], help="a stop string (repeatable)")
    decoding.add_argument("--no-eos", action="store_true", help="do not stop at <|endoftext|>")
    parser.add_argument("--lines", type=int, help="stop once a text has this many lines and cut it there (14 for sonnets)")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ...")
    parser.add_argument("--sonnets-out", help="write CS224N generated_sonnets.txt here instead of printing")
    return parser


def main(argv: list[str]) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    options = dict(
        max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        num_beams=args.num_beams, length_penalty=args.length_penalty, early_stopping=args.early_stopping,
        best_of=args.best_of, seed=args.seed,
    )  # fmt: skip
    try:  # before loading the model: a bad option costs no wait
        check_decoding_options(**options)
    except GenerationInputError as err:
        parser.error(str(err))  # named as in Python (top_p is --top-p)
    ids, prompts = read_prompts(args)
    model = load_backbone(args.checkpoint, args.base).to(args.device)
    tokenizer = gpt2_tokenizer()
    if args.no_eos:
        options["eos_token_id"] = None
    if args.lines is not None and args.num_beams == 1:
        # Stop a row once prompt + continuation hold `--lines` complete lines (the cut below is exact).
        for prompt in prompts:
            if complete_lines(prompt) >= args.lines:
                parser.error(f"--lines {args.lines}: a prompt already holds {complete_lines(prompt)} lines")
        needed = args.lines - min(complete_lines(p) for p in prompts)
        options["stop_when"] = lambda new_ids: complete_lines(tokenizer.decode(new_ids)) >= needed
    out = generate_text(model, tokenizer, prompts, stop_strings=args.stop, **options)
    texts = [p + t for p, t in zip(prompts, out.texts)]
    if args.lines is not None:
        texts = [first_lines(text, args.lines) for text in texts]
    if args.sonnets_out:
        from ..tasks.sonnet import write_generated_sonnets  # the CS224N layout, shared with `predict`

        path = write_generated_sonnets(Path(args.sonnets_out), list(zip(ids, texts)))
        print(f"wrote {len(texts)} sonnets to {path}")
        return
    for id_, text in zip(ids, texts):
        sys.stdout.write(f"--- {id_}\n{text}\n")
