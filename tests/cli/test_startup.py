"""Start-up: the garbage collector is off while the command's module is imported, the
loaded objects are frozen, and collection is on again — in a fresh interpreter each time
(the state under test is the process's)."""

from __future__ import annotations

import subprocess
import sys

PROBE = """
import gc, sys
{before}
from shadow_burnin.cli import cli
on_after_import = gc.isenabled()
cli.main(["bench", "--help"], standalone_mode=False)
print(on_after_import, gc.isenabled(), gc.get_freeze_count(), file=sys.stderr)
"""


def probe(before: str = "") -> tuple[bool, bool, int]:
    done = subprocess.run([sys.executable, "-c", PROBE.format(before=before)],
                          capture_output=True, text=True, check=True)
    a, b, frozen = done.stderr.split()[-3:]
    return a == "True", b == "True", int(frozen)


def test_a_command_starts_with_its_modules_frozen_and_collection_on() -> None:
    on_after_import, on_after_command, frozen = probe()
    assert on_after_import and on_after_command
    assert frozen > 10_000  # click, numpy, the read path: out of the collector's sight


def test_a_program_that_turned_collection_off_keeps_it_off() -> None:
    on_after_import, on_after_command, _ = probe("gc.disable()")
    assert not on_after_import and not on_after_command
