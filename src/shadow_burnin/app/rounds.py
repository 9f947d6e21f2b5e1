"""``recent`` and ``show``: rounds of the log for display, each side's ``error`` redacted
against the API keys the config can reach (an old log may still hold an echoed key)."""

from __future__ import annotations

from typing import Any

from shadow_burnin.app.files import require_log
from shadow_burnin.config import Config
from shadow_burnin.io.log.logset import find_round, last_rounds  # across rotated segments


def recent_rounds(cfg: Config, count: int) -> list[dict[str, Any]]:
    """The log's last ``count`` rounds, oldest first (LogError: no log)."""
    from shadow_burnin.app.burnin import known_secrets, redact_errors  # not on bench's path

    keys = known_secrets(cfg)
    return [redact_errors(r, keys) for r in last_rounds(require_log(cfg.paths.log), count)]


def round_of(cfg: Config, number: int) -> dict[str, Any] | None:
    """Round ``number`` of the log, or None (LogError: no log)."""
    record = find_round(require_log(cfg.paths.log), number)
    if record is None:
        return None
    from shadow_burnin.app.burnin import known_secrets, redact_errors

    return redact_errors(record, known_secrets(cfg))
