"""Putting back the clinical words an OCR engine misreads: "meg" after a dose is "mcg".

Tesseract's LSTM model leans towards English letter sequences: "mcg" comes out as
"meg", "ml" as "mi", "HbA1c" as "HbAtc", "Metformin" as "Metiormin". Its user-words
option (given the same list, `tesseract_ocr`) barely changes that (docs/ocr.md), so
the pass corrects the text after recognition, against the same vocabulary:

- a word whose *skeleton* equals a vocabulary entry's is that entry. The skeleton maps
  the characters engines confuse to one form (1 I i ! | t -> l, e ¢ -> c, q -> g,
  0 O -> o) and lower-cases, so "HbAtc", "HbAic" and "HbA1¢" all become "hbalc";
- short entries (under five characters: units, "LDL") are corrected only right after
  a number ("500 meg", "179mI"), where an English word is unlikely;
- long entries (seven characters and more: drug names) also take one other
  character wrong ("Metiormin"), when exactly one entry is that close;
- a word that differs from an entry only in case is left alone ("insulin").

The vocabulary is `vocabulary/clinical.words` (when `ocr.clinical_vocabulary`) plus
the deployment's `ocr.user_words`.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

from . import tesseract_ocr

_CONFUSABLE = str.maketrans({"1": "l", "I": "l", "i": "l", "!": "l", "|": "l", "t": "l",
                             "e": "c", "¢": "c", "q": "g", "0": "o", "O": "o"})
_NUMBER = re.compile(r"^[(]?\d+(?:[.,]\d+)?$")
_GLUED = re.compile(r"^(\d+(?:[.,]\d+)?)(\D.*)$")  # "179mI": a dose glued to its unit
_EDGES = re.compile(r"^([(\"']*)(.*?)([,.;:)\"']*)$")
SHORT = 5   # entries shorter than this are units or acronyms: corrected only after a number
LONG = 7    # entries this long may also differ by one character


def skeleton(word: str) -> str:
    return word.translate(_CONFUSABLE).lower()


def _one_apart(a: str, b: str) -> bool:
    """Whether a and b differ by exactly one substituted, inserted or deleted character."""
    if abs(len(a) - len(b)) > 1 or a == b:
        return False
    if len(a) == len(b):
        return sum(x != y for x, y in zip(a, b)) == 1
    short, long_ = (a, b) if len(a) < len(b) else (b, a)
    return any(long_[:i] + long_[i + 1:] == short for i in range(len(long_)))


class Corrector:
    """Corrects the words of OCR text against a vocabulary (see the module's rules)."""

    def __init__(self, words: list[str]) -> None:
        by_skeleton: dict[str, set[str]] = {}
        for word in words:
            by_skeleton.setdefault(skeleton(word), set()).add(word)
        # A skeleton two entries share ("ml" and "mL") says nothing about which one was meant,
        # unless they differ only in case: then the first listed wins.
        self._exact: dict[str, str] = {}
        for key, entries in by_skeleton.items():
            if len({e.lower() for e in entries}) == 1:
                self._exact[key] = next(w for w in words if skeleton(w) == key)
        self._long = [(key, word) for key, word in self._exact.items() if len(word) >= LONG]

    def __bool__(self) -> bool:
        return bool(self._exact)

    def word(self, token: str, after_number: bool) -> str:
        """The vocabulary entry `token` is a misreading of, or `token` itself."""
        lead, core, trail = _EDGES.match(token).groups()  # type: ignore[union-attr]  # matches any string
        if not core:
            return token
        glued = _GLUED.match(core)
        if glued:
            number, unit = glued.groups()
            return lead + number + self._entry(unit, True) + trail
        return lead + self._entry(core, after_number) + trail

    def _entry(self, core: str, after_number: bool) -> str:
        key = skeleton(core)
        entry = self._exact.get(key)
        if entry is None and len(core) >= LONG:
            close = [word for k, word in self._long if _one_apart(k, key)]
            entry = close[0] if len(close) == 1 else None
        if entry is None or entry.lower() == core.lower():
            return core
        if len(entry) < SHORT and not after_number:
            return core
        return entry

    def line(self, text: str) -> str:
        """`text` with its misread vocabulary words put right; spacing kept as it was."""
        parts = re.split(r"(\s+)", text)
        previous = ""
        for i in range(0, len(parts), 2):
            token = parts[i]
            if token:
                parts[i] = self.word(token, bool(_NUMBER.match(previous)))
                previous = token
        return "".join(parts)


@functools.lru_cache(maxsize=4)
def corrector(clinical_vocabulary: bool, user_words: str) -> Corrector:
    """The corrector for these settings, made once per process."""
    words: list[str] = []
    if clinical_vocabulary:
        words += tesseract_ocr.entries(tesseract_ocr.shipped_vocabulary("words"))
    if user_words:
        try:
            words += tesseract_ocr.entries(Path(user_words).read_text())
        except OSError as exc:
            raise RuntimeError(f"ocr.user_words: cannot read {user_words}: {exc.strerror}") from None
    return Corrector(words)
