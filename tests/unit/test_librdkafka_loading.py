"""librdkafka is loaded by relay processes only (depot_common.relay_process): ~14 MiB of RSS elsewhere."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize("wiring", ["depot_upload.bootstrap", "depot_indexer.bootstrap", "depot_reconciler.bootstrap"])
def test_a_services_wiring_does_not_load_librdkafka(wiring: str) -> None:
    probe = f"import sys, {wiring}; print('confluent_kafka' in sys.modules, 'depot_common.outbox' in sys.modules)"
    loaded = subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.split()
    assert loaded == ["False", "True"], f"{wiring} loads confluent_kafka (or no longer the outbox at all)"


def test_the_relay_producer_loads_it() -> None:
    probe = "import sys, depot_common.relay_producer; print('confluent_kafka' in sys.modules)"
    assert (
        subprocess.run([sys.executable, "-c", probe], check=True, capture_output=True, text=True).stdout.strip()
        == "True"
    )
