"""Value parsers shared by the config, its sections and the command line: a leaf module
(it imports nothing of the package but ``core`` and the escape helper), so ``config`` and
``config_sections`` both use it without importing each other.

Every parser raises ``ValueError`` with a one-line message that names the setting;
``config.load`` turns that into a ``ConfigError`` naming the file (exit 2). No message
ever repeats a value that may hold a secret (a URL with credentials, a pasted API key).
"""

from __future__ import annotations

import math
import re
from urllib.parse import urlsplit

from shadow_burnin.core.limits import DURATION_S
from shadow_burnin.render.escape import term

_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)d)?(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m)?"
                       r"(?:(\d+(?:\.\d+)?)s?)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a host name, an IPv4 address or a bracketed IPv6 literal (checked by urlsplit)
_HOST = re.compile(r"[A-Za-z0-9._~%-]+|\[[0-9A-Fa-f:.%A-Za-z]+\]")


def parse_duration(value: str | float | int, where: str = "duration") -> float:
    """``72h``, ``30m``, ``90s``, ``2d``, ``1h30m`` or seconds → seconds (positive,
    at most ten years)."""
    if isinstance(value, bool):
        raise ValueError(f"{where}: expected a duration like 72h, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    else:
        text = value.strip().lower()
        parts = _DURATION.fullmatch(text)
        if not text or parts is None:
            raise ValueError(f"{where}: expected a duration like 72h, 30m or 90s, "
                             f"got {shown(value)}")
        d, h, m, s = (float(g) if g else 0.0 for g in parts.groups())
        seconds = d * 86400 + h * 3600 + m * 60 + s
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError(f"{where}: must be positive, got {shown(value)}")
    if seconds > DURATION_S[1]:
        raise ValueError(f"{where}: at most {DURATION_S[1] / 86400:.0f} days, "
                         f"got {shown(value)}")
    return seconds


def shown(value: object, limit: int = 60) -> str:
    """A value quoted for a one-line message: control characters shown, length cut."""
    text = term(repr(value))
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_url(name: str, url: str, *, allow_query: bool = False) -> str:
    """An ``http(s)://host[:port][/path]`` URL, or ValueError naming ``name``.

    Refused: another scheme, no host, a port that is not 1..65535 or trailing garbage
    after the host, whitespace or control characters, a query or fragment (unless
    ``allow_query``: a webhook), and credentials (``user:pass@``): those would be printed
    and logged; the message points to ``api_key_env`` and never repeats the URL.
    """
    if "@" in url.split("?", 1)[0].split("#", 1)[0].partition("://")[2].split("/", 1)[0]:
        raise ValueError(f"{name}: credentials in the URL (user:password@) are refused, "
                         "they would be printed and logged; put the key in an environment "
                         "variable and name it with api_key_env (the URL is not shown)")
    if any(c.isspace() or ord(c) < 32 or ord(c) == 127 for c in url):
        raise ValueError(f"{name}: the URL contains whitespace or control characters: "
                         f"{shown(url)}")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:  # e.g. "Port out of range 0-65535", "Port could not be cast"
        raise ValueError(f"{name}: invalid port in {shown(url)} ({exc})") from None
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError(f"{name} must be an http:// or https:// URL, got {shown(url)}")
    host = parts.netloc.rsplit(":", 1)[0] if port is not None or parts.netloc.endswith(":") \
        else parts.netloc
    if not parts.hostname or not _HOST.fullmatch(host):
        raise ValueError(f"{name}: no valid host in {shown(url)}")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{name}: port must be 1..65535, got {port}")
    if not allow_query and (parts.query or parts.fragment or url.endswith(("?", "#"))):
        raise ValueError(f"{name}: a base URL takes no query or fragment, got {shown(url)}")
    return url


def check_env_name(name: str, value: str) -> str:
    """The NAME of an environment variable; a pasted key is refused without echoing it."""
    if not _ENV_NAME.fullmatch(value):
        raise ValueError(f"{name} must be the NAME of an environment variable (letters, "
                         "digits, _); the value given is not shown")
    return value


def positive(name: str, value: float) -> None:
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be positive, got {value}")


def in_bounds(name: str, value: float, bounds: tuple[float, float]) -> None:
    """``bounds`` from ``core.limits`` (inclusive)."""
    lo, hi = bounds
    if not (isinstance(value, int | float) and math.isfinite(value) and lo <= value <= hi):
        raise ValueError(f"{name} must be in {lo:_}..{hi:_}, got {shown(value)}")
