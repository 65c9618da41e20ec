"""README's configuration table names exactly the environment variables the settings models
read, and its "Local stack (make dev)" table only variables ``make dev`` itself reads."""

from __future__ import annotations

import re
from pathlib import Path

from tests.settings_helpers import ALL_SETTINGS

ROOT = Path(__file__).resolve().parents[2]
# Read by ``make dev`` itself (deploy/src/depot_devstack/__main__.py), not by a settings model.
DEVSTACK_MAIN = ROOT / "deploy" / "src" / "depot_devstack" / "__main__.py"


def section(title: str) -> str:
    """The text of README's section headed ``title`` (any level), up to the next heading."""
    text = (ROOT / "README.md").read_text()
    match = re.search(rf"^#+ {re.escape(title)}\n(.*?)(?=^#+ )", text, flags=re.MULTILINE | re.DOTALL)
    assert match, f"README has no section {title!r}"
    return match.group(1)


def first_column_variables(text: str) -> set[str]:
    """Every variable named in backticks in the first column of the section's table rows."""
    names: set[str] = set()
    for line in text.splitlines():
        if line.startswith("|") and not line.startswith("|---"):
            first = line.split("|")[1]
            names.update(re.findall(r"`([A-Z][A-Z0-9_]*)`", first))
    return names


def test_configuration_table_names_exactly_the_settings_the_models_read() -> None:
    """A setting missing from README's configuration table, or a row naming a variable no model reads, fails."""
    documented = first_column_variables(section("Configuration"))
    assert ALL_SETTINGS - documented == set(), "settings missing from README's configuration table"
    assert documented - ALL_SETTINGS == set(), "README's configuration table names variables no settings model reads"


def test_local_stack_table_names_only_what_make_dev_reads() -> None:
    """Each variable of README's "Local stack (make dev)" table is read by depot_devstack and by no settings model."""
    local = first_column_variables(section("Local stack (make dev)"))
    source = DEVSTACK_MAIN.read_text()
    assert local, "README's local stack table names no variable"
    assert local & ALL_SETTINGS == set()
    assert {name for name in local if f'"{name}"' not in source} == set()
