"""The pipeline bench's second phase (benchmarks/pipeline.py): its rate and its backlog verdict."""

from __future__ import annotations

import pytest
from benchmarks.pipeline import SUSTAINED_FRACTION, Backlog, Document, Probe, sustained_rate


def _documents(latencies_s: list[float], rate: float = 10.0) -> list[Document]:
    """Documents uploaded ``1/rate`` s apart, each searchable after its latency."""
    documents = []
    for index, latency in enumerate(latencies_s):
        sent = index / rate
        documents.append(Document(word=f"w{index}", sent=sent, acked=sent + 0.01, found=sent + 0.01 + latency))
    return documents


def test_the_second_phase_runs_at_a_stated_fraction_of_the_probed_rate_in_whole_uploads() -> None:
    probe = Probe(uploads=250, elapsed_s=2.0, concurrency=16)
    assert probe.per_s == 125.0
    assert SUSTAINED_FRACTION < 1  # at the full closed-loop rate any pause becomes a backlog
    assert sustained_rate(probe) == float(int(125.0 * SUSTAINED_FRACTION))
    assert sustained_rate(Probe(uploads=1, elapsed_s=10.0, concurrency=16)) == 1.0


def test_when_the_indexer_fell_behind_the_probe_its_rate_sets_the_second_phase() -> None:
    kept_up = Probe(uploads=250, elapsed_s=2.0, concurrency=16, indexed_per_s=124.0)
    fell_behind = Probe(uploads=250, elapsed_s=2.0, concurrency=16, indexed_per_s=60.0)
    assert kept_up.pipeline_per_s == 124.0
    assert fell_behind.pipeline_per_s == 60.0
    assert sustained_rate(fell_behind) == float(int(60.0 * SUSTAINED_FRACTION))


def test_a_pipeline_that_keeps_up_shows_flat_latency_and_equal_rates() -> None:
    documents = list(reversed(_documents([0.08] * 40)))  # the order documents were found in does not matter
    backlog = Backlog.of(documents, upload_per_s=10.0, indexed_per_s=9.9, lag_at_end=1)
    assert backlog.kept_up == pytest.approx(0.99)
    assert backlog.p50_first_quarter_s == pytest.approx(0.08)
    assert backlog.p50_last_quarter_s == pytest.approx(0.08)


def test_a_growing_backlog_shows_in_the_rates_and_the_last_quarter() -> None:
    documents = _documents([0.05 + 0.02 * index for index in range(40)])
    backlog = Backlog.of(documents, upload_per_s=10.0, indexed_per_s=7.0, lag_at_end=12)
    assert backlog.kept_up == pytest.approx(0.7)
    assert backlog.p50_last_quarter_s > 5 * backlog.p50_first_quarter_s


def test_without_uploads_nothing_counts_as_kept_up() -> None:
    assert Backlog.of([], upload_per_s=0.0, indexed_per_s=0.0, lag_at_end=0).kept_up == 0.0
