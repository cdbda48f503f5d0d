"""Title cleaning as in the paper (section 4.2), plus a lighter mode that keeps brands and sizes."""

from __future__ import annotations

import html
import re
from functools import lru_cache

_TAG = re.compile(r"<[^>]*>?")
_SIZE = re.compile(
    r"^\d{1,4}(?:[./]\d+)?(?:mm|cm|m|in|inch|ft|oz|ml|l|g|kg|lb|lbs|pk|pack|pcs|ct|count|v|w|mah|gb|tb|x)?$",
    re.IGNORECASE,
)
_NON_WORD = re.compile(r"[^A-Za-z0-9./ ]+")
_DIGITS = re.compile(r"\d+")
_SPACES = re.compile(r"\s+")
_JUNK = re.compile(r"(\bvar\b|function\s*\(|[{};=]|https?://)")


@lru_cache(maxsize=1)
def english_words() -> frozenset[str]:
    """Return NLTK's English word list (web2), from NLTK when installed, else `english-words`."""
    try:
        from nltk.corpus import words  # noqa: PLC0415

        return frozenset(w.lower() for w in words.words())
    except LookupError:
        from english_words import get_english_words_set  # noqa: PLC0415

        return frozenset(get_english_words_set(["web2"], lower=True))


def _strip_markup(title: str) -> str:
    text = html.unescape(html.unescape(title))
    return _TAG.sub(" ", text)


def clean_title(title: str | None, mode: str = "light", max_words: int = 20) -> str:
    """Clean one product title; return "" when nothing usable is left."""
    if not isinstance(title, str):  # None, or NaN from a missing metadata field
        return ""
    text = _strip_markup(title)
    if _JUNK.search(text):
        return ""
    if mode == "paper":
        text = " ".join(t for t in text.split() if t.isascii())
        text = _DIGITS.sub(" ", _NON_WORD.sub(" ", text)).replace(".", " ").replace("/", " ")
        vocab = english_words()
        tokens = [t for t in text.split() if t.lower() in vocab]
    elif mode == "light":
        tokens = []
        for raw in text.split():
            if not raw.isascii():
                continue
            for piece in _NON_WORD.sub(" ", raw).split():
                tok = piece.strip("./")
                if tok.isalpha() or (tok and _SIZE.match(tok)):
                    tokens.append(tok)
    else:
        raise ValueError(f"title_cleaning must be 'paper' or 'light', got {mode!r}")
    return _SPACES.sub(" ", " ".join(tokens[:max_words])).strip()


def leaf_category(categories: list[str] | None) -> str:
    """Return the most specific category name of a metadata category path, cleaned of markup."""
    if categories is None or len(categories) == 0:
        return ""
    return _SPACES.sub(" ", _strip_markup(str(categories[-1]))).strip()
