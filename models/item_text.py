"""The documented item-text template: what the encoder sees for an item, and its cache key.

One item becomes one line of text::

    "{title}. Categories: {c1}, {c2}. {description}. {key}: {value}. {key}: {value}"

Sections that are empty after cleaning are left out together with their separator, so an item
with only a title becomes just the title. A section that already ends in ``.``, ``!``, ``?`` or
``…`` gets no extra full stop ("Great!. Categories" never appears). The text is what the
embedding cache is keyed on (see :func:`text_key`), so the template is part of the cache
contract: changing it changes every key and forces a re-embed, which is the intent.

Invariants of every string returned by :func:`clean_text` and :func:`item_text`:

* no control characters (Unicode category ``Cc``), no lone surrogates (``Cs``) and none of the
  invisible format characters in :data:`_INVISIBLE` (zero-width space, BOM, word joiner, soft
  hyphen);
* no leading or trailing whitespace, and every run of whitespace is a single ASCII space;
* Unicode NFC normalised, so visually equal strings hash equally.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Iterable, Mapping, Sequence

__all__ = ["clean_text", "item_text", "text_key"]

# Invisible format characters that carry no meaning for an embedding but change the hash. The
# rest of category Cf is kept on purpose: ZWJ/ZWNJ change the meaning of emoji sequences and of
# words in Persian, Hindi and other scripts.
_INVISIBLE = frozenset("\u200b\ufeff\u2060\u00ad")
_TERMINAL_PUNCTUATION = (".", "!", "?", "…")
# Length of the hex digest kept in a cache key: 32 hex digits = 128 bits, far beyond any
# catalog's collision risk while keeping keys short in RocksDB.
_KEY_HEX_DIGITS = 32


def clean_text(s: str | None) -> str:
    """Return ``s`` NFC-normalised with control characters removed and whitespace collapsed.

    Control characters (``\\x00``-``\\x1f``, ``\\x7f``-``\\x9f``, tabs and newlines included)
    become a space so that "a\\nb" stays two words; lone surrogates and invisible format
    characters are dropped. ``None`` and all-blank input give ``""``.
    """
    if not s:
        return ""
    # Lone surrogates would make the later UTF-8 encode (hashing, the Rust tokenizer) raise;
    # they cannot be NFC-normalised either, so they go first.
    chars: list[str] = []
    for ch in s:
        category = unicodedata.category(ch)
        if category == "Cs" or ch in _INVISIBLE:
            continue
        chars.append(" " if category == "Cc" else ch)
    # str.split() with no argument splits on every Unicode whitespace (NBSP, U+2028, ...), which
    # is exactly the set we want collapsed to one ASCII space.
    return " ".join(unicodedata.normalize("NFC", "".join(chars)).split())


def _format_value(value: object) -> str:
    """Render one attribute value: sequences become "a, b", scalars their str()."""
    if value is None:
        return ""
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, bool):
        # str(True) is "True"; lower case reads more naturally for a language model.
        return "yes" if value else "no"
    if isinstance(value, Iterable) and not isinstance(value, Mapping | bytes):
        return ", ".join(part for part in (_format_value(v) for v in value) if part)
    return clean_text(str(value))


def _terminated(section: str) -> str:
    """Append a full stop unless the section already ends a sentence."""
    return section if section.endswith(_TERMINAL_PUNCTUATION) else section + "."


def item_text(
    title: str | None,
    categories: Iterable[str] | str | None,
    description: str | None,
    attributes: Mapping[str, object] | None,
    selected_attributes: Sequence[str] = (),
) -> str:
    """Render an item as the single text the encoder embeds (see the module docstring).

    Args:
        title: Item title; cleaned, may be empty.
        categories: Category names in catalog order; cleaned, empties and repeats dropped (first
            occurrence wins). A bare string is one category, not a sequence of letters.
        description: Free text; cleaned, may be empty.
        attributes: Item attributes (brand, colour, ...). Values may be strings, numbers,
            booleans or sequences of those.
        selected_attributes: Attribute keys to include, in this order. Attributes are opt-in:
            by default none are included, because volatile attributes (price, stock) in the text
            would change the cache key and force a re-embed on every price update. Selected keys
            that are missing or empty are skipped.

    Returns:
        The item text; ``""`` when every field is empty (the encoder treats that as "no text").
    """
    sections: list[str] = []
    title_clean = clean_text(title)
    if title_clean:
        sections.append(title_clean)

    if isinstance(categories, str):
        categories = [categories]
    seen: set[str] = set()
    cats: list[str] = []
    for raw in categories or ():
        cat = clean_text(raw)
        if cat and cat not in seen:
            seen.add(cat)
            cats.append(cat)
    if cats:
        sections.append("Categories: " + ", ".join(cats))

    description_clean = clean_text(description)
    if description_clean:
        sections.append(description_clean)

    if attributes:
        for key in selected_attributes:
            if key not in attributes:
                continue
            name = clean_text(key)
            value = _format_value(attributes[key])
            if name and value:
                sections.append(f"{name}: {value}")

    if not sections:
        return ""
    # Every section but the last ends a sentence; the last keeps its own ending so that the
    # template reads "... key: value" without a dangling full stop.
    return " ".join([_terminated(s) for s in sections[:-1]] + [sections[-1]])


def text_key(model_id: str, text: str) -> str:
    """Cache key of ``text`` embedded by the model ``model_id``.

    ``f"{model_id}:{sha256(utf8(text)).hexdigest()[:32]}"``. The model id comes first so that a
    cache can be scanned or dropped per model by prefix. Lone surrogates are hashed with
    ``surrogatepass`` so that the function never raises for any ``str``; texts produced by
    :func:`item_text` contain none.
    """
    digest = hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{model_id}:{digest[:_KEY_HEX_DIGITS]}"
