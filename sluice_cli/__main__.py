"""`python -m sluice_cli`: the same as the `sluice` console script."""

from .main import main

raise SystemExit(main())
