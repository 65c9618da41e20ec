"""``python -m depot_reconciler run|serve|relay``."""

from __future__ import annotations

from depot_reconciler.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
