"""The one internal exception of the client: a reply that cannot be used."""

from __future__ import annotations


class ReplyError(Exception):
    """``code`` is the error code recorded in the round; ``detail`` a short reason."""

    def __init__(self, code: str, detail: str = "", *, status: int | None = None):
        super().__init__(code)
        self.code = code
        self.detail = detail
        self.status = status

    def message(self) -> str:
        return f"{self.code}: {self.detail}" if self.detail else self.code
