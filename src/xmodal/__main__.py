"""`python -m xmodal` runs the CLI."""

from xmodal.cli import main

raise SystemExit(main())
