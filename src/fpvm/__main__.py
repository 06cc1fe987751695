"""Allow ``python3 -m fpvm`` where the console script is not on PATH (e.g. early in the guest's boot)."""

from fpvm.cli import main

raise SystemExit(main())
