"""Command-line interface: thin click commands over the library.

Every ``ShadowBurninError`` becomes one line on stderr and exit status 2. ``halo`` is the
same program under the earlier tool's name (``halo bench`` = ``shadow-burnin bench``).
"""

from __future__ import annotations

import gc
import os

# start-up: no cyclic garbage collection while click (below) and then the command's module
# (numpy, the read path: `_start_up`) are imported, ~0.1 s and some 200 000 objects, none
# of them garbage; once the command's module is loaded, everything loaded is frozen
# (``gc.freeze``: later collections, and the full one at interpreter exit, skip it). On
# a warm `bench` of 1 M rounds: ~16 ms of ~0.15 s (benchmarks/index.py, README "Scale").
_GC_WAS_ON = gc.isenabled()
gc.disable()

# every figure is a 1-D reduction: BLAS threads only cost their start-up (0.2 s of a
# warm `bench` on a loaded machine); set before anything imports numpy
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import contextlib
import importlib
import sys
from collections.abc import Iterator
from typing import Any

import click

from shadow_burnin import __version__
from shadow_burnin.app.readahead import check_early
from shadow_burnin.errors import ShadowBurninError
from shadow_burnin.render.escape import term

_frozen = False


@contextlib.contextmanager
def _start_up(was_on: bool) -> Iterator[None]:
    """No cyclic collection inside; after it, the first time, everything loaded so far is
    frozen out of the collector's sight; collection is on again if it was (a program that
    imports this module keeps its own setting)."""
    global _frozen
    gc.disable()
    try:
        yield
    finally:
        if not _frozen:
            _frozen = True
            gc.freeze()
        if was_on:
            gc.enable()


# command name → the module that defines it: a command's module (and what it imports:
# aiohttp, the servers, …) is loaded only when that command runs or help lists it.
COMMAND_MODULES = {
    "run": "run", "bench": "report", "recent": "report", "show": "report",
    "config": "info", "prompts": "info", "import-legacy": "legacy", "demo": "demo",
    "divergences": "divergences", "gates": "gates", "ack-halt": "gates", "ppl": "ppl",
    "cutover": "cutover", "rollback": "cutover",
    "serve": "serve", "status": "status", "report": "report_html",
    "migrate": "migrate",
    "mirror": "mirror",
    "preflight": "preflight",
    "export": "export",
}


class Group(click.Group):
    """Commands loaded on demand; every ``ShadowBurninError`` mapped to one line + exit 2."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(COMMAND_MODULES) | set(self.commands))

    def resolve_command(self, ctx: click.Context, args: list[str]
                        ) -> tuple[str | None, click.Command | None, list[str]]:
        # the logs named on the line: their index's CRC starts on a thread now, while
        # the command's module (numpy, the config, the read path) is imported
        if args:
            check_early(args[0], args[1:])
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in COMMAND_MODULES:
            with _start_up(gc.isenabled()):
                module = importlib.import_module(f".{COMMAND_MODULES[cmd_name]}", __name__)
            for command in module.COMMANDS:
                self.add_command(command)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShadowBurninError as exc:
            # the message may quote a path or value from the user or a file: escaped here,
            # once, so no escape sequence reaches the terminal
            click.echo(f"shadow-burnin: error: {term(exc)}", err=True)
            ctx.exit(exc.exit_code)
        except click.UsageError as exc:  # a bad flag value: one line too, exit 2
            if isinstance(exc, click.NoSuchOption):
                raise
            click.echo(f"shadow-burnin: error: {term(exc.format_message())}", err=True)
            ctx.exit(2)


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="shadow-burnin")
def cli() -> None:
    """Shadow burn-in for LLM inference servers.

    Fire every prompt at v1 (production) and v2 (candidate) at temperature 0, diff the
    replies byte for byte, and summarise the evidence for a cutover.

    \b
    Example:
      shadow-burnin run --v1 http://127.0.0.1:8080 --v2 http://127.0.0.1:8180 --rounds 100
      shadow-burnin bench
    """


def main() -> None:
    cli(prog_name="halo" if sys.argv and sys.argv[0].endswith("halo") else "shadow-burnin")


if _GC_WAS_ON:  # a program that imports this module (the shadow process, tests) keeps it
    gc.enable()
