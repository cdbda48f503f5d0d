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


def clean_title(title: str | None, mode: str, max_words: int) -> str:
    """Clean one product title; return "" when nothing usable is left. The reference the engine's Arrow kernels
    (`clean_titles_arrow`) are tested against; `processing.title_cleaning` and `max_title_words` give the settings."""
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
    if categories is None or len(categories) == 0 or not isinstance(categories[-1], str):
        return ""  # no list, an empty one, or a missing (null) label
    return _SPACES.sub(" ", _strip_markup(categories[-1])).strip()


# ---- the same cleaning, vectorised over an Arrow array (run inside the data engine as an Arrow UDF) ----
# RE2 (Arrow's regex engine) spellings of the patterns above. Python's str.split() and `\s` split on Unicode
# whitespace, RE2's `\s` on ASCII only: the class lists every character str.isspace() accepts.


@lru_cache(maxsize=1)
def _re2_space() -> str:
    chars = [i for i in range(0x110000) if chr(i).isspace()]
    return "[" + "".join(f"\\x{{{i:x}}}" for i in chars) + "]"


_RE2_TAG = r"<[^>]*>?"
_RE2_NOT_WORD = r"[^\pL\pN_]"  # Python's \b: letters, digits and _ (Unicode)
_RE2_SIZE = (r"(?i)^\d{1,4}(?:[./]\d+)?(?:mm|cm|m|in|inch|ft|oz|ml|l|g|kg|lb|lbs|pk|pack|pcs|ct|count|v|w|mah|gb|tb|x)?$")


def _re2_junk() -> str:
    return (rf"(?:^|{_RE2_NOT_WORD})var(?:$|{_RE2_NOT_WORD})|function{_re2_space()}*\(|[{{}};=]|https?://")


def strip_markup_arrow(values):
    """`_strip_markup` over an Arrow string array: HTML entities decoded twice (only on values holding '&'), tags
    replaced by a space; nulls stay null."""
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    values = pc.cast(as_array(values), pa.string())
    has_entity = pc.fill_null(pc.match_substring(values, "&"), False)
    if pc.any(has_entity).as_py():
        idx = pc.indices_nonzero(has_entity)
        decoded = pa.array([html.unescape(html.unescape(v)) for v in pc.take(values, idx).to_pylist()], pa.string())
        values = pc.replace_with_mask(values, has_entity, decoded)
    return pc.replace_substring_regex(values, _RE2_TAG, " ")


def leaf_labels_arrow(values):
    """`leaf_category([x])` for each value of an Arrow string array: markup stripped, whitespace collapsed."""
    import pyarrow.compute as pc  # noqa: PLC0415

    text = pc.replace_substring_regex(strip_markup_arrow(values), _re2_space() + "+", " ")
    return pc.utf8_trim(pc.fill_null(text, ""), " ")


def join_per_row(rows, tokens, n: int, max_words: int | None = None, sep: str = " "):
    """Join the first `max_words` (all: None) tokens of each row (`rows` ascending numbers < n) with `sep`: one
    string a row, "" where a row has none."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    counts = np.bincount(rows, minlength=n)
    starts = np.cumsum(counts) - counts
    position = np.arange(len(rows)) - np.repeat(starts, counts)
    keep = position < (len(rows) if max_words is None else max_words)
    counts = np.bincount(rows[keep], minlength=n)
    offsets = pa.array(np.concatenate([[0], np.cumsum(counts)]).astype(np.int32))
    lists = pa.ListArray.from_arrays(offsets, tokens.filter(pa.array(keep)))
    return pc.binary_join(lists, sep)


def _split(values, rows, pattern: str, regex: bool):
    """Split each value, carrying each piece's row number."""
    import numpy as np  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    pieces = pc.split_pattern_regex(values, pattern) if regex else pc.split_pattern(values, pattern)
    parent = pc.list_parent_indices(pieces).to_numpy(zero_copy_only=False)
    return pc.list_flatten(pieces), np.asarray(rows)[parent]


@lru_cache(maxsize=1)
def _vocab_array():
    import pyarrow as pa  # noqa: PLC0415

    return pa.array(sorted(english_words()), pa.string())


def as_array(values):
    """One Arrow array from an array, a ChunkedArray (as some engines hand them) or a Python list."""
    import pyarrow as pa  # noqa: PLC0415

    if isinstance(values, pa.ChunkedArray):
        return values.combine_chunks()
    return values if isinstance(values, pa.Array) else pa.array(values)


def clean_titles_arrow(titles, mode: str, max_words: int):
    """`clean_title` over an Arrow string array, with Arrow's vectorised kernels: the same output value for value
    (tests/test_text.py checks it on the real titles). Null or unusable titles give ""."""
    import numpy as np  # noqa: PLC0415
    import pyarrow as pa  # noqa: PLC0415
    import pyarrow.compute as pc  # noqa: PLC0415

    if mode not in {"paper", "light"}:
        raise ValueError(f"title_cleaning must be 'paper' or 'light', got {mode!r}")
    titles = pc.cast(as_array(titles), pa.string())
    n = len(titles)
    text = pc.fill_null(strip_markup_arrow(titles), "")
    junk = pc.match_substring_regex(text, _re2_junk())
    words, rows = _split(text, np.arange(n), _re2_space(), regex=True)
    ascii_words = pc.string_is_ascii(words)
    words, rows = words.filter(ascii_words), rows[ascii_words.to_numpy(zero_copy_only=False)]
    if mode == "paper":
        words = pc.replace_substring_regex(pc.replace_substring_regex(words, _NON_WORD.pattern, " "), r"\d+", " ")
        words = pc.replace_substring(pc.replace_substring(words, ".", " "), "/", " ")
        pieces, rows = _split(words, rows, " ", regex=False)
        keep = pc.is_in(pc.utf8_lower(pieces), value_set=_vocab_array())
    else:
        pieces, rows = _split(pc.replace_substring_regex(words, _NON_WORD.pattern, " "), rows, " ", regex=False)
        pieces = pc.utf8_trim(pieces, "./")
        keep = pc.or_(pc.match_substring_regex(pieces, r"^[A-Za-z]+$"), pc.match_substring_regex(pieces, _RE2_SIZE))
    keep_np = keep.to_numpy(zero_copy_only=False)
    joined = join_per_row(rows[keep_np], pieces.filter(keep), n, max_words)
    return pc.if_else(junk, "", joined)
