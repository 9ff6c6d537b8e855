"""The one normal form of an identifier that two systems must compare equal: a product's externalId
(catalog sync), an order line's productId and a click's searchLogId (conversions).

Both halves of the gateway call ``normalise_identifier``, so a SKU typed with a stray space, a
non-breaking space at its end, a zero-width space pasted from a spreadsheet or a decomposed accent
(``e`` + U+0301 from macOS) becomes the same string in the catalog Neuroon indexes, in the clicks
the widget records and in the conversion we send.
"""

from __future__ import annotations

import unicodedata

# Control characters (tab, newline, NUL…), format characters (zero-width space, zero-width joiner,
# byte-order mark, soft hyphen, bidi marks), line and paragraph separators and lone surrogates:
# invisible in every admin screen, never part of what a merchant means by an id.
_REMOVED_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs"})


def normalise_identifier(value: str) -> str:
    """Unicode NFC, invisible characters removed, surrounding whitespace (NBSP included) trimmed.

    An empty result means the value was blank. Linear in the length of ``value``.
    """
    # isprintable() is False for every character we remove (and for spaces other than U+0020,
    # which stay), and ASCII is always NFC: most ids take this fast path (webhook intake's hot path).
    if value.isascii() and value.isprintable():
        return value.strip()
    text = unicodedata.normalize("NFC", value)
    if not text.isprintable():
        text = "".join(c for c in text if unicodedata.category(c) not in _REMOVED_CATEGORIES)
    return text.strip()
