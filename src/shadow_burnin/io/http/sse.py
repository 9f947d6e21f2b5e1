"""Server-sent events, read incrementally with a hard cap on bytes."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator
from typing import TYPE_CHECKING

from shadow_burnin.io.http.reply_error import ReplyError

if TYPE_CHECKING:
    import aiohttp


class Splitter:
    """SSE bytes in, the ``data`` payloads of the events they complete out (multi-line
    data joined with ``\\n``; comments and other fields ignored). Raises
    ``ReplyError('too-large')`` once more than ``limit`` bytes have been fed, so a runaway
    reply never grows memory past the cap. Pure: the readers bring the bytes."""

    __slots__ = ("buf", "data", "limit", "total")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.total = 0
        self.buf = b""
        self.data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[bytes]:
        """The payloads of the events this chunk completes (often none)."""
        self.total += len(chunk)
        if self.total > self.limit:
            raise ReplyError("too-large", f"stream over {self.limit} bytes")
        self.buf += chunk
        if b"\n" not in chunk:  # ``buf`` had no newline left before this chunk
            return []
        *lines, self.buf = self.buf.split(b"\n")
        out: list[bytes] = []
        data = self.data
        for line in lines:
            line = line.removesuffix(b"\r")
            if not line:
                if data:
                    out.append(data[0] if len(data) == 1 else b"\n".join(data))
                    data = self.data = []
            elif line.startswith(b"data:"):
                data.append(line[5:].removeprefix(b" ").strip())
        return out

    def end(self) -> list[bytes]:
        """The last event's payload when the stream ended without its blank line."""
        tail = self.buf.removesuffix(b"\r")
        if tail.startswith(b"data:"):
            self.data.append(tail[5:].removeprefix(b" ").strip())
        return [b"\n".join(self.data)] if self.data else []


async def batches(stream: aiohttp.StreamReader, limit: int
                  ) -> AsyncGenerator[list[bytes], None]:
    """Yield the ``data`` payloads of the events completed by each chunk read, as one list
    per chunk (one generator step per read, not per event); see :class:`Splitter`."""
    split = Splitter(limit)
    async for chunk in stream.iter_any():
        out = split.feed(chunk)
        if out:
            yield out
    last = split.end()
    if last:
        yield last


async def events(stream: aiohttp.StreamReader, limit: int) -> AsyncIterator[bytes]:
    """Yield the ``data`` payload of each event, one at a time (see :func:`batches`)."""
    async for batch in batches(stream, limit):
        for payload in batch:
            yield payload
