"""``migrate``: a log of the older layout → a new log with one line per round."""

from __future__ import annotations

from pathlib import Path

import click

from shadow_burnin.app.migrate import migrate as migrate_log


@click.command()
@click.argument("old", type=click.Path(path_type=Path, dir_okay=True, readable=False))
@click.option("--log", "new", required=True, type=click.Path(path_type=Path, readable=False),
              help="The new log to write (must not exist).")
def migrate(old: Path, new: Path) -> None:
    """Write a log with exactly one line per round from an older log.

    A/A pairs move inside their round (key "aa"); events (halt, ack, alerts) move to
    NEW.events.jsonl. OLD is only read, never changed; NEW must not exist.

    \b
    Example:
      shadow-burnin migrate burnin.jsonl --log burnin-v2.jsonl && wc -l burnin-v2.jsonl
    """
    done = migrate_log(old, new)
    extra = f"; {done.orphans} A/A line(s) without their round kept as events" \
        if done.orphans else ""
    click.echo(f"migrated {done.rounds:,} rounds ({done.aa_pairs:,} A/A pairs inside their "
               f"round, {done.events:,} events to {done.events_file}) to {done.log}{extra}")


COMMANDS = [migrate]
