"""The round index's integrity check (an XXH3-64 checksum of each segment), startable
early.

Checking a 1 M-round index reads its 89 MB once (~10 ms with XXH3; it was ~22 ms with
CRC-32, the format before version 3, most of it the CRC itself). A
command that knows its log from its flags (``bench --log X``) calls :func:`prefetch`
before it imports the rest of the read path: the segments' checksums are computed on another
thread (``preadv`` and ``xxhash`` release the GIL) while the main thread imports and
loads the configuration. :func:`prefetched` hands them to the index reader, which still
compares every segment's checksum with its header before it trusts a byte: nothing is
skipped, the work only starts sooner. The checksums are kept for one file identity (device,
inode, size, modification time): a file replaced or written to since is checked again.

Light on purpose (``os``, ``struct``, ``threading``, ``xxhash``): it is imported before
numpy and the rest of the package.
"""

from __future__ import annotations

import os
import struct
import threading
from pathlib import Path

import xxhash

MAGIC = b"SBX3"  # version 3: XXH3-64 checksums (version 2, b"SBX2", had CRC-32)
OLD_MAGIC = b"SBX2"
HEAD = struct.Struct("<4sIQQ")  # magic, header length, body length, XXH3-64 of both
CRC_CHUNK = 1 << 20

Identity = tuple[int, int, int, int]
_pending: dict[str, tuple[threading.Thread, dict[str, object]]] = {}


def identity(fd: int) -> Identity:
    st = os.fstat(fd)
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def checksum(*parts: bytes | memoryview) -> int:
    """The XXH3-64 of the parts, one after the other (what a segment's head holds)."""
    h = xxhash.xxh3_64()
    for part in parts:
        h.update(part)
    return int(h.intdigest())


def crc_range(fd: int, start: int, end: int, window: memoryview) -> int:
    """The checksum of bytes ``[start, end)`` of ``fd``, read through ``window`` (one
    small buffer, reused: it stays in the CPU's cache; the file is not mapped, so
    nothing becomes resident)."""
    h = xxhash.xxh3_64()
    pos, size = start, len(window)
    while pos < end:
        got = os.preadv(fd, [window[:min(size, end - pos)]], pos)
        if not got:
            break
        h.update(window[:got])
        pos += got
    return int(h.intdigest())


def segment_crcs(fd: int, size: int) -> dict[tuple[int, int], int]:
    """The checksum of every segment's header and body along the chain, by ``(start, end)``;
    stops quietly at anything that is not a whole segment (the reader reports it)."""
    window = memoryview(bytearray(CRC_CHUNK))
    out: dict[tuple[int, int], int] = {}
    pos = 0
    while size - pos >= HEAD.size:
        raw = os.pread(fd, HEAD.size, pos)
        if len(raw) != HEAD.size:
            break
        magic, hlen, blen, _crc = HEAD.unpack(raw)
        start = pos + HEAD.size
        end = start + hlen + blen
        if magic != MAGIC or end > size:
            break
        out[(start, end)] = crc_range(fd, start, end, window)
        pos = end
    return out


def _work(path: Path, box: dict[str, object]) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        before = identity(fd)
        box["crcs"] = segment_crcs(fd, before[2])
        box["identity"] = before if identity(fd) == before else None
    except (OSError, struct.error, ValueError):
        box.clear()
    finally:
        os.close(fd)


def prefetch(index_file: Path) -> None:
    """Start computing the checksums of ``index_file``'s segments on a thread (nothing when
    it does not exist; a second call for the same file does nothing)."""
    key = os.path.abspath(index_file)
    if key in _pending or not os.path.isfile(key):
        return
    box: dict[str, object] = {}
    thread = threading.Thread(target=_work, args=(Path(key), box), daemon=True)
    _pending[key] = (thread, box)
    thread.start()


def prefetched(index_file: Path, fd: int) -> dict[tuple[int, int], int] | None:
    """The checksums a :func:`prefetch` of this file computed (waiting for it), when the
    file open as ``fd`` is still the file they were computed from; else None. Taken
    once: a later open checks again."""
    job = _pending.pop(os.path.abspath(index_file), None)
    if job is None:
        return None
    thread, box = job
    thread.join()
    crcs = box.get("crcs")
    if box.get("identity") != identity(fd) or not isinstance(crcs, dict):
        return None
    return crcs


def index_enabled() -> bool:
    """False when the environment sets ``SHADOW_BURNIN_INDEX=off`` (readers then read
    the log as before, and no index is read or written by them)."""
    return os.environ.get("SHADOW_BURNIN_INDEX", "on").lower() not in (
        "off", "0", "no", "false")
