"""One escape helper per output medium, applied once at the output edge to every string
that came from data (the log, prompt files, a server's reply or headers, user flags).

- :func:`term` — plain text for a terminal: control characters (C0 except newline and
  tab, DEL, C1, and the bidi overrides) shown as ``⟨U+XXXX⟩``, so no escape sequence
  reaches the terminal.
- :func:`markup` — :func:`term`, then rich markup escaped (``[bold]`` stays literal):
  for strings interpolated into rich markup.
- :func:`markdown` — one inline Markdown span: controls shown, newlines folded to spaces,
  HTML and Markdown metacharacters escaped (no heading, link, table cell or tag can start).
- :func:`html` — HTML text or attribute value: ``& < > " '`` escaped, controls shown.
- :func:`json_bytes` — JSON: orjson, with lone surrogates kept as ``\\udXXX`` escapes.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

_CONTROL = re.compile(
    "[\x00-\x08\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
    "\ud800-\udfff]"
)


def _show(m: re.Match[str]) -> str:
    return f"⟨U+{ord(m.group()):04X}⟩"


def term(text: object) -> str:
    """Safe for a terminal: no control or bidi-override character survives."""
    return _CONTROL.sub(_show, str(text))


def markup(text: object) -> str:
    """Safe inside rich markup: :func:`term` plus rich's own markup escape."""
    from rich.markup import escape as rich_escape  # rich only when rendering markup

    return rich_escape(term(text))


_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~>])")


def markdown(text: object) -> str:
    """One inline Markdown span: no new block, link, tag or table cell can start."""
    import html as _html  # here: html.entities is a 2 000-entry table reading commands skip

    s = term(str(text)).replace("\r\n", " ").replace("\n", " ").replace("\t", " ")
    s = _html.escape(s, quote=True)
    return _MD_SPECIAL.sub(r"\\\1", s)


def html(text: object) -> str:
    """HTML text or a quoted attribute value."""
    import html as _html

    return _html.escape(term(text), quote=True)


def json_bytes(obj: Any, *, indent: bool = False) -> bytes:
    """JSON for output; strings that orjson refuses (lone surrogates) fall back to the
    standard library, which writes them as ``\\udXXX`` escapes."""
    try:
        return orjson.dumps(obj, option=orjson.OPT_INDENT_2 if indent else 0)
    except TypeError:
        import json as _json

        return _json.dumps(obj, indent=2 if indent else None, ensure_ascii=True,
                           default=str).encode()
