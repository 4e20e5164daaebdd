"""Shakespeare sonnets: language modelling on sonnets, scored by generating the dev continuations.

Validation continues each dev prompt (its first 3 lines) with the KV-cached batched decoder, cuts
the result at 14 lines, and scores the full sonnets against the gold ones exactly as the CS224N
evaluation does: sacrebleu `CHRF()` with its defaults (char order 6, word order 0, beta 2),
`corpus_score(generated, [gold])`, 0-100; sonnets are matched by number, not by position.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sacrebleu.metrics import CHRF

from ..generation import GENERATE_DEFAULTS, GenerationInputError, check_decoding_options, generate_text
from ..sonnet_form import perfect_rate
from ..tokenizer import gpt2_tokenizer
from .base import OptionError
from .lm import LanguageModel
from .predictions import gather_rows, write_text

# The CS224N project's sampling settings.
DEFAULT_GENERATION = {"max_new_tokens": 160, "do_sample": True, "temperature": 1.2, "top_p": 0.9, "seed": 0}
GENERATION_OPTIONS = set(GENERATE_DEFAULTS) - {"stop_when"}  # the keywords of `generate` a config can set


class SonnetGenerator(LanguageModel):
    """Fine-tune on sonnets; validation logs `val/chrf` and `val/perfect_rate` next to `val/loss`.

    Args:
        generation: decoding options for validation and predict, any keyword of
            `ptl_gpt2.generation.generate` (do_sample, temperature, top_k, top_p, num_beams,
            best_of, max_new_tokens, seed, ...); unset keys keep the CS224N defaults
            (sampling, temperature 1.2, top-p 0.9, 160 new tokens, seed 0).
        lines: cut each generated sonnet after this many lines (None: keep all it generates).
        predictions_dir: where `predict` writes `generated_sonnets.txt`.
        **kwargs: the backbone and optimizer options of `GPT2Task`.
    """

    monitor = "val/chrf"
    monitor_mode = "max"

    def __init__(
        self,
        generation: dict[str, Any] | None = None,
        lines: int | None = 14,
        predictions_dir: str = "predictions",
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        unknown = set(generation or {}) - GENERATION_OPTIONS
        if unknown:
            raise OptionError(
                f"model.generation: unknown option(s) {sorted(unknown)}; choose from {sorted(GENERATION_OPTIONS)}"
            )
        self.generation = {**DEFAULT_GENERATION, **(generation or {})}
        try:  # now, not at the first validation after an epoch of training
            check_decoding_options(**self.generation)
        except GenerationInputError as err:
            raise GenerationInputError(f"model.generation: {err}") from None
        self.lines = lines
        self.predictions_dir = predictions_dir
        self._sonnets: list[tuple[Any, ...]] = []

    def complete(self, prompts: list[str]) -> list[str]:
        """The full sonnets: each prompt followed by its generated continuation, cut at `lines`."""
        tokenizer = gpt2_tokenizer()
        options = dict(self.generation)
        if self.lines is not None and options.get("num_beams", 1) == 1:  # stop once every row has its lines
            needed = self.lines - min(_complete_lines(p) for p in prompts)
            options["stop_when"] = lambda new_ids: _complete_lines(tokenizer.decode(new_ids)) >= needed
        out = generate_text(self.model, tokenizer, prompts, **options)
        full = [p + t for p, t in zip(prompts, out.texts)]
        return full if self.lines is None else [_cut_lines(text, self.lines) for text in full]

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        super().validation_step(batch, batch_idx)  # val/loss on the gold sonnets
        for id_, text, gold in zip(batch["ids"], self.complete(batch["prompts"]), batch["references"]):
            self._sonnets.append((id_, text, gold))

    def on_validation_epoch_start(self) -> None:
        self._sonnets = []

    def on_validation_epoch_end(self) -> None:
        super().on_validation_epoch_end()
        rows = gather_rows(self._sonnets)  # every process gets all rows and scores them alike
        generated, gold = [r[1] for r in rows], [r[2] for r in rows]
        self.log("val/chrf", chrf(generated, gold), prog_bar=True, rank_zero_only=True)
        self.log("val/perfect_rate", perfect_rate(generated), rank_zero_only=True)

    def predict_step(self, batch: dict[str, Any], batch_idx: int) -> list[tuple[Any, str]]:
        rows = list(zip(batch["ids"], self.complete(batch["prompts"])))
        self._sonnets.extend(rows)
        return rows

    def on_predict_epoch_start(self) -> None:
        self._sonnets = []

    def on_predict_epoch_end(self) -> None:
        rows = gather_rows(self._sonnets)
        if self.trainer.is_global_zero:
            path = write_generated_sonnets(Path(self.predictions_dir) / "generated_sonnets.txt", rows)
            self.print(f"wrote {len(rows)} sonnets to {path}")


def chrf(generated: list[str], gold: list[str]) -> float:
    """Corpus chrF (0-100) as the CS224N evaluation computes it."""
    return float(CHRF().corpus_score(generated, [gold]).score)


def write_generated_sonnets(path: Path, rows: list[tuple[Any, str]]) -> Path:
    """The CS224N `generated_sonnets.txt` layout: a header, then each number and its sonnet."""
    return write_text(path, "--Generated Sonnets-- \n\n" + "".join(f"\n{i}\n{text}\n\n" for i, text in rows))


def _cut_lines(text: str, lines: int) -> str:
    kept = [line for line in text.split("\n") if line.strip()][:lines]
    return "\n".join(kept) + "\n"


def _complete_lines(text: str) -> int:
    """Non-blank lines that a newline has ended."""
    return sum(1 for line in text.split("\n")[:-1] if line.strip())
