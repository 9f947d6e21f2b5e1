"""``python -m shadow_burnin`` = the ``shadow-burnin`` command."""

from shadow_burnin.cli import main

main()
