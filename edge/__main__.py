"""``python -m edge``: the parkedge CLI."""

from edge.cli import main

main()
