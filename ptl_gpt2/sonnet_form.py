"""Sonnet form checker: 14 lines, Shakespearean rhyme ABAB CDCD EFEF GG, about 10 syllables a line.

Rhyme and syllables come from the CMU pronouncing dictionary (through `pronouncing`), with
spelling-based fallbacks for words it does not know (Early Modern forms such as "feed'st").

    >>> check_sonnet(text).perfect
    >>> perfect_rate(generated_sonnets)   # logged next to chrF, used to filter synthetic data

Rules (see docs/sonnet_form.md for the numbers behind them):
- Lines: split on newlines; blank lines, surrounding whitespace and a number-only title line are ignored.
- Two end words rhyme when any of their pronunciations share the phones from the last stressed
  vowel on (stress level ignored), or when they are the same word (Shakespeare rhymes "will"
  with "will"), or when they end alike in spelling ("love"/"prove": the eye rhymes of his day).
  A word the dictionary lacks is compared by spelling only.
- A line scans when it has 9-11 syllables (10, or 11 with a feminine ending, or 9 with an elision
  the dictionary does not know); the meter holds when at least 10 of 14 lines scan.
- `perfect`: 14 lines, all 7 rhyme pairs rhyme, and the meter holds.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

import pronouncing

# Line indices (0-based) that must rhyme in ABAB CDCD EFEF GG.
RHYME_PAIRS: tuple[tuple[int, int], ...] = ((0, 2), (1, 3), (4, 6), (5, 7), (8, 10), (9, 11), (12, 13))
NUM_LINES = 14
SYLLABLE_RANGE = (9, 11)  # inclusive bounds of a line that scans
MIN_SCANNING_LINES = 10  # of 14

_WORD = re.compile(r"[a-z]+(?:'[a-z]+)*")  # "feed'st", "world's"; hyphens and dashes split words
_NUMBER_LINE = re.compile(r"\d+")
_VOWEL_GROUP = re.compile(r"[aeiouy]+")


@dataclass(frozen=True)
class SonnetCheck:
    """What `check_sonnet` found. `rhyme_pairs[k]` says whether the k-th pair of RHYME_PAIRS
    rhymes (False when a line of the pair is missing); `syllables[i]` counts line i."""

    num_lines: int
    end_words: tuple[str, ...]
    rhyme_pairs: tuple[bool, ...]
    syllables: tuple[int, ...]
    problems: tuple[str, ...]

    @property
    def rhymes(self) -> bool:
        return len(self.rhyme_pairs) == len(RHYME_PAIRS) and all(self.rhyme_pairs)

    @property
    def meter_fraction(self) -> float:
        """Fraction of lines with a syllable count inside SYLLABLE_RANGE."""
        lo, hi = SYLLABLE_RANGE
        return sum(lo <= n <= hi for n in self.syllables) / max(len(self.syllables), 1)

    @property
    def meter_ok(self) -> bool:
        lo, hi = SYLLABLE_RANGE
        return sum(lo <= n <= hi for n in self.syllables) >= MIN_SCANNING_LINES

    @property
    def perfect(self) -> bool:
        return self.num_lines == NUM_LINES and self.rhymes and self.meter_ok


def sonnet_lines(text: str) -> list[str]:
    """Non-blank, stripped lines of `text`, without a number-only title line at the top."""
    lines = [line.strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    if lines and _NUMBER_LINE.fullmatch(lines[0]):
        lines = lines[1:]
    return lines


def words(line: str) -> list[str]:
    """Lower-cased words of a line; curly apostrophes count as straight ones, and an apostrophe
    that opens or closes a word ("'tis", "lovers'") is kept off it."""
    return _WORD.findall(line.lower().replace("\u2019", "'"))


def check_sonnet(text: str) -> SonnetCheck:
    lines = sonnet_lines(text)
    end_words = tuple((words(line) or [""])[-1] for line in lines)
    syllables = tuple(sum(syllable_count(w) for w in words(line)) for line in lines)

    problems = []
    if len(lines) != NUM_LINES:
        problems.append(f"{len(lines)} lines, expected {NUM_LINES}")
    rhyme_pairs = []
    for i, j in RHYME_PAIRS:
        ok = j < len(lines) and rhyme(end_words[i], end_words[j])
        rhyme_pairs.append(ok)
        if j < len(lines) and not ok:
            problems.append(f"lines {i + 1} and {j + 1} do not rhyme: {end_words[i]!r} / {end_words[j]!r}")
    lo, hi = SYLLABLE_RANGE
    off = [f"{k + 1} ({n})" for k, n in enumerate(syllables) if not lo <= n <= hi]
    if len(syllables) - len(off) < MIN_SCANNING_LINES:
        problems.append(f"only {len(syllables) - len(off)} lines have {lo}-{hi} syllables; off: {', '.join(off)}")
    return SonnetCheck(len(lines), end_words, tuple(rhyme_pairs), syllables, tuple(problems))


def perfect_rate(texts) -> float:
    """Fraction of `texts` that are perfect sonnets (14 lines, ABAB CDCD EFEF GG, meter holds)."""
    texts = list(texts)
    if not texts:
        raise ValueError("perfect_rate needs at least one text")
    return sum(check_sonnet(t).perfect for t in texts) / len(texts)


# ---------------------------------------------------------------------------------- rhyme


def rhyme(a: str, b: str) -> bool:
    """Whether two (lower-case) words rhyme; see the module docstring for the rule."""
    if not a or not b:
        return False
    if a == b:
        return True
    if spelling_rhyme(a, b):
        return True
    return bool(rhyming_parts(a) & rhyming_parts(b))


@lru_cache(maxsize=None)
def rhyming_parts(word: str) -> frozenset[str]:
    """Phones from the last stressed vowel on, stress digits dropped, one per pronunciation
    (empty when the dictionary does not know the word)."""
    return frozenset(re.sub(r"\d", "", pronouncing.rhyming_part(p)) for p in phones(word))


def spelling_rhyme(a: str, b: str) -> bool:
    """Same last vowel group and what follows ("night"/"light", with a silent final e:
    "love"/"prove"), or the same last three letters ("eyes"/"lies" fails, "bold"/"cold" holds)."""
    a, b = a.replace("'", ""), b.replace("'", "")
    return _spelling_key(a) == _spelling_key(b) or (min(len(a), len(b)) >= 3 and a[-3:] == b[-3:])


def _spelling_key(word: str) -> str:
    groups = list(_VOWEL_GROUP.finditer(word))
    if not groups:
        return word
    last = groups[-1]
    # A final e after a consonant is silent: the vowel before it carries the rhyme ("prove").
    if word.endswith("e") and last.start() == len(word) - 1 and len(groups) > 1 and len(word) > 2:
        last = groups[-2]
    return word[last.start():]


# ------------------------------------------------------------------------------- syllables


@lru_cache(maxsize=None)
def phones(word: str) -> tuple[str, ...]:
    """CMU pronunciations of a word; tries it with and without apostrophes, and a possessive
    "'s" as its stem plus Z."""
    for form in (word, word.replace("'", "")):
        found = pronouncing.phones_for_word(form)
        if found:
            return tuple(found)
    if word.endswith("'s"):
        return tuple(p + " Z" for p in pronouncing.phones_for_word(word[:-2]))
    return ()


@lru_cache(maxsize=None)
def syllable_count(word: str) -> int:
    """CMU syllable count of the word's first (most common) pronunciation; for unknown words the
    number of vowel groups, less a silent final e ("'st" and "'d" add no syllable)."""
    found = phones(word)
    if found:
        return pronouncing.syllable_count(found[0])
    return heuristic_syllables(word)


def heuristic_syllables(word: str) -> int:
    word = word.replace("'", "")
    count = len(_VOWEL_GROUP.findall(word))
    if count > 1 and word.endswith("e") and not word.endswith(("le", "ee", "ye")):
        count -= 1  # silent e: "stone"; but "table", "thee", "eye"
    return count
