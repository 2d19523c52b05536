"""The item-text template, text cleaning and the embedding cache key."""

from __future__ import annotations

import re
import unicodedata

from hypothesis import given
from hypothesis import strategies as st

from recstream.models.item_text import clean_text, item_text, text_key

KEY_RE = re.compile(r"^(?P<model>.*):(?P<hash>[0-9a-f]{32})$", re.DOTALL)


def test_template_with_every_field() -> None:
    text = item_text(
        "Trail Runner 2",
        ["Shoes", "Running"],
        "Light mesh upper",
        {"brand": "Acme", "colour": "red", "price": 89.0},
        selected_attributes=("brand", "colour"),
    )
    assert (
        text
        == "Trail Runner 2. Categories: Shoes, Running. Light mesh upper. brand: Acme. colour: red"
    )


def test_empty_fields_are_left_out_with_their_separator() -> None:
    assert item_text("Mug", [], "", None) == "Mug"
    assert item_text("", ["Kitchen"], None, {}) == "Categories: Kitchen"
    assert item_text(None, None, "Just a description.", None) == "Just a description."
    assert item_text(" ", ["", "  "], "\n\t", {"a": ""}, ("a",)) == ""


def test_no_double_full_stop_after_terminal_punctuation() -> None:
    assert item_text("Wow!", ["Toys"], "Fun.", None) == "Wow! Categories: Toys. Fun."
    assert item_text("Why?", [], "Because", None) == "Why? Because"


def test_categories_cleaned_deduplicated_and_a_bare_string_is_one_category() -> None:
    assert item_text("T", ["Books", " Books ", "", "Fiction\n"], None, None) == (
        "T. Categories: Books, Fiction"
    )
    assert item_text("T", "Books", None, None) == "T. Categories: Books"


def test_attributes_are_opt_in_in_selected_order() -> None:
    attrs = {"size": ["S", "M", ""], "organic": True, "price": 3.5, "brand": None}
    assert item_text("Tee", [], "", attrs) == "Tee"
    assert item_text("Tee", [], "", attrs, ("organic", "missing", "brand", "size")) == (
        "Tee. organic: yes. size: S, M"
    )
    assert item_text("Tee", [], "", attrs, ("price",)) == "Tee. price: 3.5"


def test_clean_text_examples() -> None:
    assert clean_text(None) == ""
    assert clean_text("  a\tb\n\nc\x00d\x7f ") == "a b c d"
    assert clean_text("no\u00a0break\u2028line") == "no break line"
    assert clean_text("zero\u200bwidth\ufeff soft\u00adhyphen") == "zerowidth softhyphen"
    assert clean_text("lone\ud800surrogate") == "lonesurrogate"
    # NFC: "e" + combining acute becomes the single code point é.
    assert clean_text("cafe\u0301") == "caf\u00e9"
    # Joiners carry meaning (emoji sequences, Indic and Persian words) and are kept.
    assert clean_text("👩\u200d💻") == "👩\u200d💻"


@given(st.text())
def test_clean_text_invariants(s: str) -> None:
    out = clean_text(s)
    assert out == out.strip()
    assert "  " not in out
    assert not any(unicodedata.category(ch) in ("Cc", "Cs") for ch in out)
    assert all(ch == " " or not ch.isspace() for ch in out)
    assert unicodedata.is_normalized("NFC", out)
    assert clean_text(out) == out
    out.encode("utf-8")  # never raises: no lone surrogates survive


@given(
    st.one_of(st.none(), st.text()),
    st.lists(st.text(), max_size=4),
    st.one_of(st.none(), st.text()),
    st.dictionaries(st.text(max_size=5), st.one_of(st.text(), st.integers(), st.booleans())),
)
def test_item_text_is_clean_and_idempotent_under_cleaning(
    title: str | None, categories: list[str], description: str | None, attrs: dict[str, object]
) -> None:
    text = item_text(title, categories, description, attrs, tuple(attrs))
    assert clean_text(text) == text


@given(st.text(min_size=1), st.text())
def test_text_key_format_and_determinism(model_id: str, text: str) -> None:
    key = text_key(model_id, text)
    match = KEY_RE.match(key)
    assert match is not None and match["model"] == model_id
    assert text_key(model_id, text) == key
    assert text_key(model_id + "x", text) != key


def test_text_key_separates_texts() -> None:
    assert text_key("m", "a cat") != text_key("m", "a cat ")
    assert text_key("m", "") == "m:e3b0c44298fc1c149afbf4c8996fb924"  # sha256 of b""
