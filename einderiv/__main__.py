"""``python -m einderiv``: the command line."""

from .cli import main

raise SystemExit(main())
