"""Command-line interface: thin click commands over the library.

Every ``ShadowBurninError`` becomes one line on stderr and exit status 2. ``halo`` is the
same program under the earlier tool's name (``halo bench`` = ``shadow-burnin bench``).
"""

from __future__ import annotations

import sys
from typing import Any

import click

from .. import __version__
from ..errors import ShadowBurninError


class Group(click.Group):
    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except ShadowBurninError as exc:
            click.echo(f"shadow-burnin: error: {exc}", err=True)
            ctx.exit(exc.exit_code)


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


def _register() -> None:
    from . import demo, divergences, gates, info, legacy, ppl, report, run

    for module in (run, report, info, legacy, demo, divergences, gates, ppl):
        for command in module.COMMANDS:
            cli.add_command(command)


_register()


def main() -> None:
    cli(prog_name="halo" if sys.argv and sys.argv[0].endswith("halo") else "shadow-burnin")
