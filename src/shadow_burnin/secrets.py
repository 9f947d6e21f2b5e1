"""Redaction of known secrets from text that came back from outside (a server's error
body, a header it echoed) before that text is stored or printed.

:func:`redact` replaces every occurrence of each known secret (length >= 4; shorter
strings would redact ordinary words) and every ``Bearer <token>`` pattern with
``[redacted]``. It is the one helper for this; the client uses it on what a server
echoes, the CLI on anything it prints that could carry a secret.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

REDACTED = "[redacted]"
MIN_SECRET_LEN = 4

# "Bearer" followed by whitespace and a token (anything up to whitespace, a quote or a
# separator that cannot be part of a header value's token).
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)[^\s\"',;]+")


def redact(text: str, secrets: Iterable[str]) -> str:
    """``text`` with each secret (len >= 4) and each ``Bearer <token>`` replaced by
    ``[redacted]``. Longer secrets are replaced first, so a secret that contains
    another is removed whole."""
    out = text
    for secret in sorted({s for s in secrets if s and len(s) >= MIN_SECRET_LEN},
                         key=len, reverse=True):
        out = out.replace(secret, REDACTED)
    return _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", out)
