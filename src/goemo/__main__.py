"""`python -m goemo` runs the CLI (also what `accelerate launch -m goemo train` uses)."""

from goemo.cli import main

main()
