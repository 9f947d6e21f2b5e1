"""Small text helpers shared by the renderers: glyphs, visible whitespace, alignment."""

from __future__ import annotations

import unicodedata

from rich.text import Text

from shadow_burnin.render.escape import term

GLYPH = {
    "exact": "=",
    "prefix-only": "~",
    "no-match": "x",
    "v1-unreachable": "1",
    "v2-unreachable": "2",
    "both-unreachable": "!",
    "not-comparable": "n",
    "client-cancelled": "c",
}
STYLE = {
    "exact": "green",
    "prefix-only": "yellow",
    "no-match": "bold red",
    "v1-unreachable": "magenta",
    "v2-unreachable": "magenta",
    "both-unreachable": "bold magenta",
    "not-comparable": "dim",
    "client-cancelled": "dim cyan",
}
_NAMED = {"\n": "↵\n", "\t": "→", "\r": "␍", " ": "·", "\u00a0": "⍽", "\ufeff": "⟨BOM⟩",
          "\u200b": "⟨ZWSP⟩", "\u200d": "⟨ZWJ⟩", "\u200c": "⟨ZWNJ⟩"}


def visible(text: str, *, spaces: bool = False) -> str:
    """Make invisible characters visible (newlines kept as line breaks)."""
    out = []
    for ch in text:
        if ch == " " and not spaces:
            out.append(ch)
        elif ch in _NAMED:
            out.append(_NAMED[ch])
        elif unicodedata.category(ch) in ("Cc", "Cf", "Zl", "Zp", "Co", "Cs", "Cn") or (
            unicodedata.category(ch) == "Zs" and ch != " "
        ):
            out.append(f"⟨U+{ord(ch):04X}⟩")
        elif unicodedata.combining(ch):
            out.append(f"◌{ch}")
        else:
            out.append(ch)
    return "".join(out)


def data(value: object, style: str = "") -> Text:
    """A string that came from data (log, prompts, server, flags) as a rich cell: a
    ``Text`` (never parsed as markup) with control characters shown (``escape.term``)."""
    return Text(term("—" if value is None else value), style=style)


def plural(n: int, word: str, many: str | None = None) -> str:
    """``1 round``, ``2 rounds``, ``1,000 rounds``."""
    return f"{n:,} {word if n == 1 else (many or word + 's')}"


def signed(value: float, digits: int = 1) -> str:
    """``+1.2``/``-1.2`` with thousands separators; a value that rounds to zero is
    ``0.0``, never ``-0.0``."""
    text = f"{value:+,.{digits}f}"
    return text[1:] if float(text.replace(",", "")) == 0 else text


def fmt_ms(value: float | None) -> str:
    return "—" if value is None else f"{value:,.0f} ms" if value >= 100 else f"{value:.1f} ms"


def fmt_pct(value: float | None, digits: int = 1) -> str:
    return "—" if value is None else f"{100 * value:.{digits}f}%"


def char_offset(text: str, byte_offset: int) -> int:
    """The character index holding byte ``byte_offset`` of the UTF-8 encoding."""
    return len(text.encode("utf-8", "surrogatepass")[:byte_offset].decode("utf-8", "ignore"))
