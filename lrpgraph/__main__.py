"""`python -m lrpgraph …` is the `lrpgraph` command."""

from .tools.cli import main

raise SystemExit(main())
