"""``python -m shadow_burnin`` = the ``shadow-burnin`` command."""

from .cli import main

main()
