"""`python -m xmodal` runs the CLI."""

from xmodal.cli import run

run()
