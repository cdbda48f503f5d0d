"""Title cleaning."""

import pytest

from amazon_llm_rec.core.data.text import clean_title, english_words, leaf_category


def test_light_keeps_brands_and_sizes_and_drops_symbols_and_foreign_words():
    raw = "Gorillex &amp; Sons Qualität Nitrile Gloves 100ct #42!! &quot;Heavy Duty&quot; 3/8 Inch"
    assert clean_title(raw, "light") == "Gorillex Sons Nitrile Gloves 100ct 42 Heavy Duty 3/8 Inch"


def test_paper_mode_keeps_only_english_words_and_no_digits():
    out = clean_title("PORTER-CABLE 740000801 Sanding Roll Qualität 80 Grit", "paper")
    assert out == "PORTER CABLE Sanding Roll Grit"
    assert not any(ch.isdigit() for ch in out)


@pytest.mark.parametrize("junk", [None, float("nan"), "", '<span class="a-size-medium a-color-secondary"', "var a = (new Date()).getTime();"])
def test_junk_titles_become_empty(junk):
    assert clean_title(junk) == ""


def test_html_tags_are_stripped_and_spaces_collapsed():
    assert clean_title("<b>Lab</b>   Beaker\tSet ") == "Lab Beaker Set"


def test_max_words_and_bad_mode():
    assert clean_title("one two three four", max_words=2) == "one two"
    with pytest.raises(ValueError, match="title_cleaning"):
        clean_title("x", mode="heavy")


def test_word_list_is_web2_and_leaf_category():
    words = english_words()
    assert len(words) > 200_000 and "glove" in words and "qualität" not in words
    assert leaf_category(["Tools", "Fashion &amp; Style"]) == "Fashion & Style"
    assert leaf_category([]) == ""
