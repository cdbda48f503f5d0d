"""Title cleaning."""

import gzip
import json

import pytest

from amazon_llm_rec.core.data.text import clean_title, english_words, leaf_category
from tests.conftest import shared_file


def test_light_keeps_brands_and_sizes_and_drops_symbols_and_foreign_words():
    raw = "Gorillex &amp; Sons Qualität Nitrile Gloves 100ct #42!! &quot;Heavy Duty&quot; 3/8 Inch"
    assert clean_title(raw, "light", 20) == "Gorillex Sons Nitrile Gloves 100ct 42 Heavy Duty 3/8 Inch"


def test_paper_mode_keeps_only_english_words_and_no_digits():
    out = clean_title("PORTER-CABLE 740000801 Sanding Roll Qualität 80 Grit", "paper", 20)
    assert out == "PORTER CABLE Sanding Roll Grit"
    assert not any(ch.isdigit() for ch in out)


@pytest.mark.parametrize("junk", [None, float("nan"), "", '<span class="a-size-medium a-color-secondary"', "var a = (new Date()).getTime();"])
def test_junk_titles_become_empty(junk):
    assert clean_title(junk, "light", 20) == ""


def test_html_tags_are_stripped_and_spaces_collapsed():
    assert clean_title("<b>Lab</b>   Beaker\tSet ", "light", 20) == "Lab Beaker Set"


def test_max_words_and_bad_mode():
    assert clean_title("one two three four", "light", max_words=2) == "one two"
    with pytest.raises(ValueError, match="title_cleaning"):
        clean_title("x", mode="heavy", max_words=20)


def test_word_list_is_web2_and_leaf_category():
    words = english_words()
    assert len(words) > 200_000 and "glove" in words and "qualität" not in words
    assert leaf_category(["Tools", "Fashion &amp; Style"]) == "Fashion & Style"
    assert leaf_category([]) == ""


TRICKY = ["a&amp;amp;b <b>x</b> 12oz 3.5mm", "vár x", "function\xa0 (", "foo\xa0bar\u3000baz", "ab/cd.ef 1/2 x.",
          None, "", "  var ", "évar y", "élan 10PK", "Size 7 &nbsp;Kit", "Lab Beaker &amp; Flask #3 Qualität",
          '<span class="a-size-medium"', "x = 1", "see https://a.b", "4-Pack 10x20cm..//", "&#39;Quote&#39; &quot;it&quot;"]


@pytest.mark.parametrize("mode", ["light", "paper"])
def test_the_arrow_kernels_clean_hard_cases_as_the_python_function_does_whole_sliced_or_chunked(mode):
    import pyarrow as pa

    from amazon_llm_rec.core.data.text import clean_titles_arrow

    expected = [clean_title(t, mode, 16) for t in TRICKY]
    whole = pa.array(TRICKY, pa.string())
    assert clean_titles_arrow(whole, mode, 16).to_pylist() == expected
    assert clean_titles_arrow(whole.slice(3), mode, 16).to_pylist() == expected[3:]
    assert clean_titles_arrow(pa.chunked_array([whole.slice(0, 5), whole.slice(5)]), mode, 16).to_pylist() == expected
    assert clean_titles_arrow(whole, mode, 2).to_pylist() == [clean_title(t, mode, 2) for t in TRICKY]


def test_the_engine_fallback_title_and_category_path_equal_the_python_functions():
    """`<brand> <leaf category>` and the " > " path, as the data_processing UDFs compute them, on lists with nulls,
    empty lists, markup, and a sliced input."""
    import pyarrow as pa

    from amazon_llm_rec.core.data.text_udfs import backup_titles_arrow, category_paths_arrow

    brands = ["Labco", None, "", "Acme &amp; Co", "Zed"]
    cats = [["Industrial &amp; Scientific", "Lab  <b>Glass</b>"], None, [], ["Tools", None], ["e", "Fashion &amp; Style"]]
    arrays = pa.array(brands, pa.string()), pa.array(cats, pa.list_(pa.string()))
    expected = [clean_title(f"{b or ''} {leaf_category(c)}".strip(), "light", 16) for b, c in zip(brands, cats)]
    paths = [" > ".join(leaf_category([x]) for x in (c or [])) for c in cats]
    assert backup_titles_arrow(*arrays, "light", 16).to_pylist() == expected
    assert category_paths_arrow(arrays[1]).to_pylist() == paths
    assert backup_titles_arrow(arrays[0].slice(1), arrays[1].slice(1), "light", 16).to_pylist() == expected[1:]
    assert category_paths_arrow(arrays[1].slice(2)).to_pylist() == paths[2:]
    assert expected[0] == "Labco Lab Glass" and paths[3] == "Tools > "


@pytest.mark.parametrize("mode", ["light", "paper"])
def test_the_arrow_kernels_clean_every_real_title_as_the_python_function_does(mode):
    """The engine's vectorised cleaning (an Arrow UDF in DuckDB and Spark) equals `clean_title` value for value, on
    every title of the three real metadata files and on hand-made hard cases."""
    import pyarrow as pa

    from amazon_llm_rec.core.data.text import clean_titles_arrow, leaf_category, leaf_labels_arrow

    titles, labels = list(TRICKY), []
    for name in ("meta_Industrial_and_Scientific.json.gz", "meta_Gift_Cards.json.gz", "meta_Magazine_Subscriptions.json.gz"):
        with gzip.open(shared_file(name), "rt") as fh:
            for line in fh:
                try:
                    row = json.loads(line)
                except ValueError:
                    continue
                titles.append(row.get("title"))
                labels += row.get("category") or []
    assert len(titles) > 9000
    expected = [clean_title(t, mode, 16) for t in titles]
    assert clean_titles_arrow(pa.array(titles, pa.string()), mode, 16).to_pylist() == expected
    assert sum(bool(e) for e in expected) > 5000  # most titles keep words: the comparison is not of empty strings
    assert leaf_labels_arrow(pa.array(labels, pa.string())).to_pylist() == [leaf_category([x]) for x in labels]
