"""The alert rules are valid Prometheus and fire when, and only when, their unit tests say."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

RULES = Path(__file__).resolve().parents[2] / "deploy" / "observability"


def promtool() -> str:
    found = shutil.which("promtool")
    assert found, "promtool is needed: make test installs Debian's prometheus package (apt-get install prometheus)"
    return found


def test_alert_rules_are_valid() -> None:
    """promtool check rules accepts deploy/observability/alerts.yml."""
    result = subprocess.run([promtool(), "check", "rules", "alerts.yml"], cwd=RULES, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_fire_as_their_unit_tests_expect() -> None:
    """promtool test rules: each alert fires on its series (and stays quiet on healthy ones)."""
    result = subprocess.run([promtool(), "test", "rules", "alerts.test.yml"], cwd=RULES, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
