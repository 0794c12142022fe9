"""Text from a job made safe to show: every character that could act on a terminal or hide itself is
written as an escape instead (``daemon.log`` and ``queue-view`` share this).

A job's command, arguments, description, error and output are anyone's bytes. Shown raw, an
escape sequence sets the terminal's title, clears the screen, changes colours or makes an OSC 8
hyperlink; a right-to-left override (U+202E) shows a name that is not the one written. So the
characters of Unicode categories Cc (controls: C0, DEL, C1), Cf (format: bidirectional controls,
zero-width characters), Cs (lone surrogates: bytes that were not UTF-8), Zl and Zp (line and
paragraph separators) become ``\\x1b``, ``\\u202e``, ``\\U000e0001`` (or, with ``json=True``,
the ``\\u001b`` escapes a JSON string holds). Everything else, non-ASCII letters included,
is left as it is.
"""

from __future__ import annotations

import unicodedata

UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
"""Unicode categories never shown as they are."""


def _escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x100:
        return f"\\x{code:02x}"
    return f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def _json_escape(ch: str) -> str:
    code = ord(ch)
    if code < 0x10000:
        return f"\\u{code:04x}"
    high, low = divmod(code - 0x10000, 0x400)  # a UTF-16 surrogate pair, as JSON writes such a character
    return f"\\u{0xD800 + high:04x}\\u{0xDC00 + low:04x}"


def visible(text: str, *, keep: str = "", json: bool = False) -> str:
    """``text`` with every character of :data:`UNSAFE_CATEGORIES` written as an escape.

    ``keep`` names characters left as they are (``"\\n\\t"`` for a job's output shown as
    lines). With ``json`` the escapes are JSON's (``\\u001b``; a character past U+FFFF as
    its surrogate pair), so a JSON string stays a JSON string with the same value.
    A printable text is returned as it is (one pass in C); otherwise it is looked at
    character by character.
    """
    probe = text.translate(dict.fromkeys(map(ord, keep))) if keep else text
    if probe.isprintable():
        return text
    escape = _json_escape if json else _escape
    return "".join(
        escape(ch) if not ch.isprintable() and ch not in keep and unicodedata.category(ch) in UNSAFE_CATEGORIES else ch
        for ch in text
    )
