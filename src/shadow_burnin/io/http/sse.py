"""Server-sent events, read incrementally with a hard cap on bytes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

import aiohttp

from shadow_burnin.io.http.reply_error import ReplyError


async def batches(stream: aiohttp.StreamReader, limit: int
                  ) -> AsyncGenerator[list[bytes], None]:
    """Yield the ``data`` payloads (multi-line data joined with ``\\n``) of the events
    completed by each chunk read, as one list per chunk (one generator step per read,
    not per event).

    Comments and other fields are ignored. Raises ``ReplyError('too-large')`` once more than
    ``limit`` bytes have arrived, so a runaway reply never grows memory past the cap.
    """
    total = 0
    buf = b""
    data: list[bytes] = []
    async for chunk in stream.iter_any():
        total += len(chunk)
        if total > limit:
            raise ReplyError("too-large", f"stream over {limit} bytes")
        buf += chunk
        if b"\n" not in chunk:  # ``buf`` had no newline left before this chunk
            continue
        *lines, buf = buf.split(b"\n")
        out: list[bytes] = []
        for line in lines:
            line = line.removesuffix(b"\r")
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" ").strip())
        if out:
            yield out
    tail = buf.removesuffix(b"\r")
    if tail.startswith(b"data:"):
        data.append(tail[5:].removeprefix(b" ").strip())
    if data:
        yield [b"\n".join(data)]


async def events(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Yield the ``data`` payload of each event, one at a time (see :func:`batches`)."""
    async for batch in batches(stream, limit):
        for payload in batch:
            yield payload
