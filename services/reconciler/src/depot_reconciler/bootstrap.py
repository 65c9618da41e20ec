"""Where the reconciler's schema and migrations live."""

from __future__ import annotations

from importlib.resources import files

SCHEMA = "reconcile"
MIGRATIONS = files("depot_reconciler") / "migrations"
