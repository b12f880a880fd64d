"""The domain on ``/metrics``: what happened, counted once, and what is, read when scraped.

Events are counted in one place, from the audit events as their transactions commit
(storage.audit_feed): every decision, stored or failed recording and purge is one.
States (the spool's backlog) and the storage parts' own tallies (upload retries, S3
errors, embedded S3 restarts) are read at scrape time, and so are the live calls'
figures (``LiveCaptures.tally``: sessions, packets received, lost and late, bytes
spooled, sessions ended by cause). Counts start at zero with the
process, as Prometheus counters do; each replica reports its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from recorder.live import LiveCaptures
from storage import audit_feed
from storage.audit_feed import FedEvent
from storage.backend import StorageBackend

# The call hook's answer, and the one that follows the caller's consent.
_DECISION_KINDS = frozenset({"call.decided", "call.caller_consent"})
# From a minute to a month late: a sweep runs hourly by default.
_LAG_BUCKETS = (60.0, 600.0, 3600.0, 7200.0, 21600.0, 86400.0, 604800.0, 2592000.0)


class DomainMetrics:
    """Registers the domain's metrics on ``registry`` and feeds them from ``backend``."""

    def __init__(
        self,
        registry: CollectorRegistry,
        backend: StorageBackend,
        clock: Callable[[], datetime],
    ) -> None:
        self._decisions = Counter(
            "callrec_decisions",
            "Call decisions answered (call hook and caller consent), by reason.",
            ["reason"],
            registry=registry,
        )
        self._stored = Counter(
            "callrec_recordings_stored", "Recordings stored in S3.", registry=registry
        )
        self._failed = Counter(
            "callrec_recordings_failed",
            "Recordings discarded or failed (opt-out, refusal, bad audio, interrupted capture).",
            registry=registry,
        )
        self._purges = Counter(
            "callrec_purges", "Recordings purged, by reason.", ["reason"], registry=registry
        )
        self._purge_lag = Histogram(
            "callrec_purge_lag_seconds",
            "Time from a recording's last expiry to its purge (purges for retention).",
            buckets=_LAG_BUCKETS,
            registry=registry,
        )
        registry.register(_StorageCollector(backend, clock))
        audit_feed.watch(backend.engine, self.observe)

    def observe(self, events: Sequence[FedEvent]) -> None:
        """Count the events of one committed transaction."""
        for event in events:
            if event.kind in _DECISION_KINDS:
                self._decisions.labels(str(event.data.get("reason"))).inc()
            elif event.kind == "recording.stored":
                self._stored.inc()
            elif event.kind == "recording.discarded":
                self._failed.inc()
            elif event.kind == "recording.purged":
                self._purges.labels(str(event.data.get("reason", "retention"))).inc()
                last_expiry = event.data.get("last_expiry")
                if isinstance(last_expiry, str):
                    lag = (event.at - datetime.fromisoformat(last_expiry)).total_seconds()
                    if lag >= 0:  # an early purge (erasure, opt-out) has no lag
                        self._purge_lag.observe(lag)


class _StorageCollector(Collector):
    """What the storage parts know right now, read at each scrape."""

    def __init__(self, backend: StorageBackend, clock: Callable[[], datetime]) -> None:
        self._backend = backend
        self._clock = clock

    def collect(self) -> Iterator[Metric]:
        backend = self._backend
        depth, oldest = backend.vault.spool_backlog(now=self._clock())
        yield GaugeMetricFamily(
            "callrec_spool_depth", "Recordings waiting in the local spool for S3.", value=depth
        )
        yield GaugeMetricFamily(
            "callrec_spool_oldest_age_seconds",
            "How long the oldest recording in the spool has waited (0 when none).",
            value=oldest,
        )
        yield CounterMetricFamily(
            "callrec_upload_retries",
            "Uploads tried again from the spool.",
            value=backend.vault.upload_retries,
        )
        errors = CounterMetricFamily(
            "callrec_s3_errors",
            "S3 requests that failed after retries, by S3 error code or exception.",
            labels=["code"],
        )
        for code, count in sorted(backend.store.errors.items()):
            errors.add_metric([code], count)
        yield errors
        supervisor = backend.s3_supervisor
        yield CounterMetricFamily(
            "callrec_embedded_s3_restarts",
            "Times the embedded S3 was started again after it died.",
            value=supervisor.restarts if supervisor is not None else 0,
        )
        if supervisor is not None:
            yield GaugeMetricFamily(
                "callrec_embedded_s3_up",
                "1 while the embedded S3 runs, 0 while it is being restarted.",
                value=0 if supervisor.problem else 1,
            )


class LiveCollector(Collector):
    """The live calls of this replica (``LiveCaptures.tally``), read at each scrape."""

    def __init__(self, live: LiveCaptures) -> None:
        self._live = live

    def collect(self) -> Iterator[Metric]:
        tally = self._live.tally()
        yield GaugeMetricFamily(
            "callrec_live_sessions", "Live capture sessions on this replica.", value=tally.active
        )
        yield CounterMetricFamily(
            "callrec_live_packets_received",
            "RTP packets that reached live sessions (also while paused or awaiting the caller).",
            value=tally.received,
        )
        yield CounterMetricFamily(
            "callrec_live_packets_lost",
            "RTP packets their senders numbered that never arrived (RFC 3550 6.4.1).",
            value=tally.lost,
        )
        yield CounterMetricFamily(
            "callrec_live_packets_late",
            "RTP packets that arrived after their place in the recording was written.",
            value=tally.late,
        )
        yield CounterMetricFamily(
            "callrec_live_spooled_bytes",
            "Audio bytes (the container, before encryption) appended to live recordings' spools.",
            value=tally.spooled,
        )
        ended = CounterMetricFamily(
            "callrec_live_sessions_ended",
            "Live sessions stored or discarded, by cause.",
            labels=["cause"],
        )
        for cause, count in sorted(tally.ended.items()):
            ended.add_metric([cause], count)
        yield ended
