"""The shadow process of ``shadow-burnin mirror`` (``app.mirror_split.shadow_process``).

Started by the mirror with pipes on stdin/stdout, never by hand. It ignores SIGINT and
SIGTERM (a service manager signals the whole group; the mirror coordinates the end) and
ends once its stdin does: drains its queue within ``grace``, commits every round, reports.
"""

from __future__ import annotations

from rich.console import Console

from shadow_burnin.app.mirror_split import run_shadow_process
from shadow_burnin.render.escape import term
from shadow_burnin.render.gates import halt_alert


def main() -> None:
    err = Console(stderr=True, soft_wrap=True)

    def warn(message: str) -> None:
        err.print(term(f"warning: {message}"), markup=False, highlight=False)

    def alert(message: str, log: str) -> None:
        err.print(halt_alert(message, log), soft_wrap=False)

    run_shadow_process(warn, alert)


if __name__ == "__main__":
    main()
