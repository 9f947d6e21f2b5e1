"""The Caddyfile on disk: the same cutover/rollback as a text edit, proven with
``caddy adapt``, written atomically with a backup.

A change made through the admin API lives only in Caddy's memory: the next
``systemctl reload caddy`` reloads the Caddyfile and sends ``/v1/*`` back to v1. So the
Caddyfile gets the equivalent edit:

- cutover: in the ``handle /v1/* { … }`` block (or a ``reverse_proxy /v1/* ADDR`` line)
  the v1 upstream becomes v2, and a ``handle /v1-legacy/* { … }`` block to v1 (its path
  rewritten back to ``/v1/…``) is added before it;
- rollback: the reverse, and the legacy block is removed.

The edited text is adapted with ``caddy adapt`` and the result checked with the same
route finder as the live config (``/v1/*`` → v2, ``/v1-legacy/*`` → v1): an edit that
does not prove out is refused (ProxyError), the file untouched.
"""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tempfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import msgspec
import orjson

from shadow_burnin.errors import ProxyError
from shadow_burnin.io.log.sidecars import write_atomic
from shadow_burnin.io.proxy.caddy import find_route, re_escape

CADDY = "caddy"
LEGACY_MARK = "# shadow-burnin: emergency route to v1 (shadow-burnin rollback removes it)"


class CaddyfileEdit(msgspec.Struct, frozen=True):
    path: Path
    before: str
    after: str

    @property
    def diff(self) -> str:
        return "".join(difflib.unified_diff(
            self.before.splitlines(keepends=True), self.after.splitlines(keepends=True),
            f"{self.path} (now)", f"{self.path} (after)"))


def _norm(token: str) -> str:
    t = token.strip().strip('"')
    for scheme in ("http://", "https://", "h2c://"):
        if t.startswith(scheme):
            t = t[len(scheme):]
    return t.rstrip("/")


def _block_end(lines: list[str], start: int) -> int:
    """Index of the line closing the block opened on ``lines[start]``."""
    depth = 0
    for i in range(start, len(lines)):
        text = re.sub(r'"(?:\\.|[^"\\])*"', '""', lines[i].split("#", 1)[0])
        depth += text.count("{") - text.count("}")
        if (depth <= 0 and i > start) or (depth == 0 and i == start and "{" in text):
            return i
    raise ProxyError("the Caddyfile has an unclosed block")


def _swap_upstreams(lines: list[str], old: str, new: str) -> int:
    """Replace upstream tokens equal to ``old`` in reverse_proxy/to lines; count them."""
    n = 0
    for i, line in enumerate(lines):
        words = line.split()
        if not words or words[0] not in ("reverse_proxy", "to"):
            continue
        parts = re.split(r"(\s+)", line)
        for j, part in enumerate(parts):
            if part and not part.isspace() and _norm(part) == old:
                parts[j] = new
                n += 1
        lines[i] = "".join(parts)
    return n


def _find_block(lines: list[str], route: str) -> tuple[int, int] | None:
    head = re.compile(r"^\s*(handle|route)\s+" + re.escape(route) + r"\s*\{\s*(#.*)?$")
    single = re.compile(r"^\s*reverse_proxy\s+" + re.escape(route) + r"\s+\S")
    for i, line in enumerate(lines):
        if head.match(line):
            return i, _block_end(lines, i)
        if single.match(line):
            if line.rstrip().endswith("{"):
                return i, _block_end(lines, i)
            return i, i
    return None


def edit_cutover(text: str, *, route: str, legacy_route: str, prefix: str,
                 legacy_prefix: str, v1: str, v2: str) -> str:
    lines = text.splitlines()
    found = _find_block(lines, route)
    if found is None:
        raise ProxyError(f"the Caddyfile has no `handle {route} {{ … }}` block or "
                         f"`reverse_proxy {route} …` line to edit")
    if _find_block(lines, legacy_route) is not None:
        raise ProxyError(f"the Caddyfile already has a {legacy_route} block")
    start, end = found
    block = lines[start:end + 1]
    indent = block[0][: len(block[0]) - len(block[0].lstrip())]
    inner = indent + "\t"
    uri = f"{inner}uri path_regexp ^{re_escape(legacy_prefix)} {prefix}"
    if block[0].lstrip().startswith(("handle", "route")):
        legacy = [block[0].replace(route, legacy_route, 1), uri, *block[1:]]
    else:  # reverse_proxy /v1/* ADDR (one line, or a block)
        body = [block[0].replace(" " + route, "", 1), *block[1:]]
        legacy = [f"{indent}handle {legacy_route} {{", uri, *("\t" + ln for ln in body),
                  f"{indent}}}"]
    legacy.insert(0, f"{indent}{LEGACY_MARK}")
    if _swap_upstreams(block, v1, v2) == 0:
        raise ProxyError(f"the Caddyfile's {route} block does not proxy to v1 ({v1})")
    out = lines[:start] + legacy + block + lines[end + 1:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def edit_rollback(text: str, *, route: str, legacy_route: str, v1: str, v2: str) -> str:
    lines = text.splitlines()
    legacy = _find_block(lines, legacy_route)
    if legacy is not None:
        start, end = legacy
        if start > 0 and lines[start - 1].strip() == LEGACY_MARK:
            start -= 1
        del lines[start:end + 1]
    found = _find_block(lines, route)
    if found is None:
        raise ProxyError(f"the Caddyfile has no {route} block to edit")
    start, end = found
    block = lines[start:end + 1]
    _swap_upstreams(block, v2, v1)
    out = lines[:start] + block + lines[end + 1:]
    return "\n".join(out) + ("\n" if text.endswith("\n") else "")


def adapt(text: str, where: Path) -> dict[str, Any]:
    """``caddy adapt`` of ``text`` (in a temp file beside ``where``, removed after)."""
    caddy = shutil.which(CADDY)
    if caddy is None:
        raise ProxyError("`caddy` is not on PATH: cannot validate the Caddyfile edit")
    with tempfile.NamedTemporaryFile("w", dir=where.parent, prefix=f".{where.name}.",
                                     suffix=".check", encoding="utf-8") as tmp:
        tmp.write(text)
        tmp.flush()
        proc = subprocess.run([caddy, "adapt", "--config", tmp.name, "--adapter", "caddyfile"],
                              capture_output=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise ProxyError(f"{where}: `caddy adapt` refuses the edited Caddyfile: "
                         f"{(err[-1] if err else 'exit ' + str(proc.returncode))[:300]}")
    try:
        data = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError:
        raise ProxyError(f"{where}: `caddy adapt` gave no JSON") from None
    if not isinstance(data, dict):
        raise ProxyError(f"{where}: `caddy adapt` gave no config")
    return data


def read(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProxyError(f"{path}: cannot read the Caddyfile: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ProxyError(f"{path}: the Caddyfile is not UTF-8 text") from None


def prove(text: str, path: Path, *, route: str, legacy_route: str, target: str,
          legacy: str | None) -> None:
    """Adapt ``text`` and check ``route`` → ``target`` and the legacy route as expected."""
    config = adapt(text, path)
    ref = find_route(config, route)
    if ref is None or set(ref.upstreams) != {target}:
        raise ProxyError(f"{path}: after the edit {route} would not point at {target}")
    lref = find_route(config, legacy_route)
    if legacy is None and lref is not None:
        raise ProxyError(f"{path}: after the edit {legacy_route} would still exist")
    if legacy is not None and (lref is None or set(lref.upstreams) != {legacy}):
        raise ProxyError(f"{path}: after the edit {legacy_route} would not point at {legacy}")


def write(edit: CaddyfileEdit) -> Path:
    """Back the old file up (``PATH.bak-<UTC time>``), then write the new one atomically."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S%fZ")
    backup = edit.path.with_name(f"{edit.path.name}.bak-{stamp}")
    write_atomic(backup, edit.before.encode("utf-8"), mode=0o600)
    mode = edit.path.stat().st_mode & 0o777 if edit.path.exists() else 0o644
    write_atomic(edit.path, edit.after.encode("utf-8"), mode=mode)
    return backup
