"""``make bench``: run every benchmark in turn."""

from __future__ import annotations

from bench import (
    call_hook,
    consent_decide,
    evidence,
    purge,
    report,
    siprec_calls,
    store_cpu,
    store_rss,
    store_typical,
    store_upload,
    webhooks,
    whip_sessions,
)

if __name__ == "__main__":
    print("== storage: encrypted streaming store vs raw put_object ==")
    store_upload.run()
    print("== storage: a typical call (3 min, two channels, Ogg/Opus) vs raw put_object ==")
    store_typical.run()
    print("== storage: callrec's CPU per 64 MiB store vs AES-GCM + SHA-256 alone ==")
    store_cpu.run()
    print("== storage: memory while storing 1 GiB ==")
    store_rss.run()
    print("== consent: decide() with 10,000 clients and 100,000 grants ==")
    consent_decide.run()
    print("== consent: call hook over HTTP vs bare endpoint ==")
    call_hook.run()
    print("== retention: purge of 20,000 recordings vs raw DeleteObjects ==")
    purge.run()
    print("== retention: report over 1,000,000 recordings on PostgreSQL ==")
    report.run()
    print("== webhooks: the outbox's cost per event, and delivery to a local receiver ==")
    webhooks.run()
    print("== retention: evidence for one recording among 1,000,000 on PostgreSQL ==")
    evidence.run()
    print("== recorder: concurrent WHIP sessions vs stock aiortc MediaRecorder ==")
    whip_sessions.run()
    print("== recorder: concurrent SIPREC calls (two G.711 streams) vs a bare UDP sink ==")
    siprec_calls.run()
