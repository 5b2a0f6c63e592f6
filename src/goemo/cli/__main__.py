"""`python -m goemo.cli` runs the CLI, as `goemo` and `python -m goemo` do."""

from goemo.cli import main

main()
