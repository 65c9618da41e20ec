"""The repository explains itself: docs/architecture.md names files that exist, and code cites docs/, not SPEC."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
#: The short prefixes docs/architecture.md defines for the four packages.
PREFIXES = {
    "U/": "services/upload-api/src/depot_upload/",
    "I/": "services/indexer/src/depot_indexer/",
    "R/": "services/reconciler/src/depot_reconciler/",
    "C/": "libs/common/src/depot_common/",
}
PRODUCTION = ("libs", "services", "deploy", "benchmarks")


def architecture_paths() -> list[str]:
    """Every repository path docs/architecture.md names in backticks, with its prefix expanded."""
    text = (DOCS / "architecture.md").read_text()
    paths = []
    for token in re.findall(r"`([^`\s]+/[^`\s]*)`", text):
        if token.startswith("/"):  # a URL path such as /healthz
            continue
        prefix = token[:2]
        paths.append(PREFIXES[prefix] + token[2:] if prefix in PREFIXES else token)
    return paths


def test_every_path_in_the_architecture_page_exists() -> None:
    """Each file or folder docs/architecture.md points a newcomer to is in the repository."""
    paths = architecture_paths()
    assert len(paths) > 50, "the page names the files of every flow"
    missing = [path for path in paths if not (ROOT / path).exists()]
    assert missing == []


def test_the_architecture_page_names_every_reconcile_check_module() -> None:
    """A new module under depot_reconciler/checks/ is listed on the one-page map too."""
    checks = ROOT / PREFIXES["R/"] / "checks"
    named = set(architecture_paths())
    modules = {f"{PREFIXES['R/']}checks/{p.name}" for p in checks.glob("*.py") if p.name != "__init__.py"}
    assert modules - named == set()


def test_production_code_cites_the_repositorys_own_docs_not_spec() -> None:
    """No file shipped in libs/, services/, deploy/ or benchmarks/ cites "SPEC §" (SPEC.md is not in the repository)."""
    citing = [
        str(path.relative_to(ROOT))
        for top in PRODUCTION
        for path in (ROOT / top).rglob("*")
        if path.is_file()
        and path.suffix in {".py", ".sql", ".js", ".yaml", ".yml", ".html", ".css", ".md"}
        and "node_modules" not in path.parts
        and "SPEC §" in path.read_text(errors="replace")
    ]
    assert citing == []
