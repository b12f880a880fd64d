"""Concurrent two-stream G.711 SIPREC calls on one gateway, against a bare UDP sink.

The gateway is the real thing: ``callrec serve`` in a subprocess on its embedded
defaults (SQLite, its own SeaweedFS), its SIPREC server on a free port, RTP ports
enough for every stream, a session limit above the load. The recording clients run
in another process (``bench.siprec_load``): each call is a multipart ``INVITE`` over
UDP (SDP with two PCMU streams, RFC 7865 metadata), ``ACK``, RTP every 20 ms on both
streams, ``BYE``. Calls start at ``RAMP_PER_S`` a second; all of them stream for
``HOLD_S`` seconds; then each is ended. Media and signalling stay on 127.0.0.1.

The baseline, in the same run: a bare asyncio UDP sink (``bench.udp_sink``, one
socket per stream, counting datagrams and nothing else) gets the same packets from
the same generator, paced the same way, without SIP.

Figures:

- packets: sent by the clients against received by the gateway (the delta of its
  ``/metrics`` ``callrec_live_packets_received_total`` over the run); goal: none lost.
  The gateway's own loss and late counts (from RTP sequence numbers) beside them;
- recordings: every call's recording (call id = the metadata's ``sipSessionID``) read
  back from the catalog in state ``stored``; goal: none missing;
- CPU per packet of the gateway process (psutil; its SeaweedFS child apart, shown on
  its own) over the hold, per packet it received over the hold (its ``/metrics`` read
  at the start and the end of the hold), against the sink's CPU per packet over its
  hold: goal ratio ≤ 3;
- RSS per call: the gateway's RSS at the end of the hold above its RSS before the
  first call, over the calls;
- the clients' own CPU and the share of packets they sent more than 40 ms behind
  time: lateness that starts on the sending side, not the gateway's.

``python -m bench.siprec_calls [CALLS [SECONDS]]`` runs at that size; without
arguments, ``SIPREC_BENCH_CALLS`` / ``SIPREC_BENCH_SECONDS`` from the environment,
else the quick default (``CALLS`` calls held ``HOLD_S`` s). The issue's goal is 500
calls held 60 s: ``python -m bench.siprec_calls 500 60``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import secrets
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

from bench.call_hook import make_tenant
from bench.whip_sessions import Server, free_port, load, metric, wait_ready

HOST = "127.0.0.1"
CALLS = 100
HOLD_S = 20.0
RAMP_PER_S = 50.0
TARGET_RATIO = 3.0
STORED_WITHIN_S = 180.0
CLIENT = "bench"


def start_gateway(workdir: Path, calls: int) -> tuple[Server, int]:
    """``callrec serve`` with its SIPREC server on a free port; the SIP port."""
    port, sip_port, admin = free_port(), free_port(), "admin-" + secrets.token_urlsafe(24)
    # Below the kernel's ephemeral range (32768 and up), so that no socket bound to
    # port 0 elsewhere takes one of them.
    first = 20000 + secrets.randbelow(10000)
    env = {
        **os.environ,
        "CALLREC_DATA_DIR": str(workdir / "var"),
        "CALLREC_HTTP_HOST": HOST,
        "CALLREC_HTTP_PORT": str(port),
        "CALLREC_SIP_HOST": HOST,
        "CALLREC_SIP_PORT": str(sip_port),
        "CALLREC_RTP_PORTS": f"{first}-{first + 2 * calls + 99}",
        "CALLREC_ADMIN_KEY": admin,
        "CALLREC_ICE_ADDRESSES": HOST,
        "CALLREC_LIVE_MAX_SESSIONS": str(calls + 50),
        "CALLREC_LOG_LEVEL": os.environ.get("SIPREC_BENCH_LOG_LEVEL", "WARNING"),
    }
    env.pop("CALLREC_DATABASE_URL", None)
    env.pop("CALLREC_S3_ENDPOINT_URL", None)
    workdir.mkdir(parents=True, exist_ok=True)
    log = (workdir / "gateway.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "recorder", "serve"], env=env, stdout=log, stderr=log
    )
    url = f"http://{HOST}:{port}"
    try:
        wait_ready(f"{url}/readyz", process)
        key = make_tenant(port, admin)
    except BaseException:
        process.kill()
        raise
    return Server(process, url, key, admin), sip_port


@dataclass
class Held:
    """What the load generator and psutil saw of one run."""

    cpu_share: float  # of one core, the receiving process, over the hold
    weed_cpu_share: float
    rss_before: int
    rss_held: int
    packets_held: int  # sent over the hold
    hold_s: float
    load: dict[str, Any]
    received_held: float | None = None  # the receiver's own count over the hold

    @property
    def cpu_per_packet_us(self) -> float:
        """Over the packets the receiver took during the hold (sent, when it cannot say):
        a packet the kernel dropped for a receiver that fell behind cost it nothing."""
        packets = self.packets_held if self.received_held is None else self.received_held
        return 1e6 * self.cpu_share * self.hold_s / max(packets, 1)


def drive(
    receiver: psutil.Process, config: dict[str, Any], count: Callable[[], float] | None = None
) -> Held:
    """Run the clients with ``config``; measure ``receiver`` over the hold (and its
    count of packets received, when ``count`` reads it)."""
    weeds = [c for c in receiver.children(recursive=True) if "weed" in c.name()]
    rss_before = receiver.memory_info().rss
    clients = subprocess.Popen(
        [sys.executable, "-m", "bench.siprec_load", json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert clients.stdout is not None
    lines = iter(clients.stdout.readline, "")
    word, sent0 = (next(lines, "") or "- 0").split()
    if word != "ramped":
        raise RuntimeError("the clients did not ramp up (their stderr says why)")
    cpu0, weed0, wall0 = _cpu(receiver), sum(_cpu(w) for w in weeds), time.monotonic()
    received0 = count() if count else None
    word, sent1 = (next(lines, "") or "- 0").split()
    if word != "held":
        raise RuntimeError("the clients did not hold (their stderr says why)")
    cpu1, weed1, wall1 = _cpu(receiver), sum(_cpu(w) for w in weeds), time.monotonic()
    received1 = count() if count else None
    rss_held = receiver.memory_info().rss
    result = json.loads(next(lines))
    if clients.wait() != 0:
        raise RuntimeError("the clients failed")
    wall = wall1 - wall0
    return Held(
        (cpu1 - cpu0) / wall,
        (weed1 - weed0) / wall,
        rss_before,
        rss_held,
        int(sent1) - int(sent0),
        wall,
        result,
        None if received0 is None or received1 is None else received1 - received0,
    )


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def baseline(calls: int, hold_s: float) -> tuple[Held, int]:
    """The same packets to a bare asyncio UDP sink; what it received."""
    sink = subprocess.Popen(
        [sys.executable, "-m", "bench.udp_sink", str(2 * calls)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert sink.stdout is not None
    try:
        ports = json.loads(sink.stdout.readline())
        config = {
            "mode": "sink",
            "sink_ports": ports,
            "calls": calls,
            "ramp_per_s": RAMP_PER_S,
            "hold_s": hold_s,
            "tag": "sink",
            "client": CLIENT,
        }
        held = drive(psutil.Process(sink.pid), config)
        sink.send_signal(signal.SIGTERM)
        received = int(sink.stdout.readline())
        sink.wait(timeout=30)
    finally:
        if sink.poll() is None:
            sink.kill()
    return held, received


def stored_recordings(server: Server, session_ids: set[str]) -> dict[str, str]:
    """Each call's recording state in the catalog, waiting for uploads to finish."""
    headers = {"Authorization": f"Bearer {server.admin}"}
    deadline = time.monotonic() + STORED_WITHIN_S
    states: dict[str, str] = {}
    while True:
        states = {}
        cursor: str | None = None
        while True:
            params = {"limit": "500", **({"cursor": cursor} if cursor else {})}
            page = httpx.get(
                f"{server.url}/v1/recordings", params=params, headers=headers, timeout=30
            ).json()
            for item in page["items"]:
                if item["call_id"] in session_ids:
                    states[item["call_id"]] = item["state"]
            cursor = page.get("next")
            if not cursor:
                break
        done = sum(1 for s in states.values() if s == "stored")
        if done == len(session_ids) or time.monotonic() > deadline:
            return states
        time.sleep(1.0)


def gateway_run(workdir: Path, calls: int, hold_s: float) -> tuple[Held, dict[str, Any]]:
    gateway, sip_port = start_gateway(workdir, calls)
    try:
        before = httpx.get(f"{gateway.url}/metrics", timeout=30).text
        config = {
            "mode": "siprec",
            "sip_port": sip_port,
            "calls": calls,
            "ramp_per_s": RAMP_PER_S,
            "hold_s": hold_s,
            "tag": "bench",
            "client": CLIENT,
            "jurisdiction": "US-NY",  # one-party: recording starts with the call
        }

        def received() -> float:
            body = httpx.get(f"{gateway.url}/metrics", timeout=30).text
            return metric(body, "callrec_live_packets_received_total")

        held = drive(gateway.ps, config, received)
        ended = [c for c in held.load["calls"] if c["state"] == "ended"]
        states = stored_recordings(gateway, {c["session_id"] for c in ended})
        after = httpx.get(f"{gateway.url}/metrics", timeout=30).text
    finally:
        gateway.stop()

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    seen = {
        "received": delta("callrec_live_packets_received_total"),
        "lost": delta("callrec_live_packets_lost_total"),
        "late": delta("callrec_live_packets_late_total"),
        "answered": len(ended),
        "stored": sum(1 for s in states.values() if s == "stored"),
        "failed_calls": [c["answer"] for c in held.load["calls"] if c["state"] != "ended"][:5],
    }
    return held, seen


def capacity(workdir: Path, calls: int, hold_s: float) -> None:
    sink, sink_received = baseline(calls, hold_s)
    ours, seen = gateway_run(workdir / f"gw-{calls}", calls, hold_s)
    sent = ours.load["sent"]
    missing = sent - seen["received"]
    print(
        f"{calls} calls × 2 streams held {hold_s:.0f} s: packets sent {sent}, received by the "
        f"gateway {seen['received']:.0f}, missing {missing:.0f} "
        f"({100 * missing / max(sent, 1):.3f} %); the gateway's own figures: lost "
        f"{seen['lost']:.0f}, late {seen['late']:.0f}"
    )
    print(
        f"  calls answered 200 and ended {seen['answered']}/{calls}, recordings stored "
        f"{seen['stored']}/{calls}"
        + (f"; failures: {seen['failed_calls']}" if seen["failed_calls"] else "")
    )
    ratio = ours.cpu_per_packet_us / sink.cpu_per_packet_us
    print(
        f"  CPU per packet: gateway {ours.cpu_per_packet_us:.1f} µs "
        f"({100 * ours.cpu_share:.0f} % of a core; its SeaweedFS "
        f"{100 * ours.weed_cpu_share:.0f} %), bare asyncio UDP sink "
        f"{sink.cpu_per_packet_us:.1f} µs ({100 * sink.cpu_share:.0f} %; received "
        f"{sink_received}/{sink.load['sent']}); ratio {ratio:.2f} (target ≤ {TARGET_RATIO:.0f})"
    )
    print(
        f"  gateway RSS {ours.rss_before / 2**20:.0f} → {ours.rss_held / 2**20:.0f} MiB = "
        f"{(ours.rss_held - ours.rss_before) / calls / 2**10:.0f} KiB per call"
    )
    behind = ours.load["behind"] / max(sent, 1)
    setup = ours.load["setup_p50_ms"], ours.load["setup_max_ms"]
    print(
        f"  clients: {100 * ours.load['load_cpu_share']:.0f} % of a core, "
        f"{100 * behind:.2f} % of packets sent > 40 ms behind time, "
        f"{ours.load['send_errors']} send errors; INVITE → 200 p50 "
        + (f"{setup[0]:.0f} ms, max {setup[1]:.0f} ms" if setup[0] is not None else "n/a")
    )
    ok = missing == 0 and seen["stored"] == calls and ratio <= TARGET_RATIO
    print(f"  goals (no packet missing, all stored, CPU ratio ≤ 3): {'met' if ok else 'NOT met'}")


def size(args: list[str]) -> tuple[int, float]:
    """Calls and hold from the command line, else the environment, else the quick default."""
    env = os.environ
    calls = int(args[0]) if args else int(env.get("SIPREC_BENCH_CALLS", CALLS))
    hold = float(args[1]) if len(args) > 1 else float(env.get("SIPREC_BENCH_SECONDS", HOLD_S))
    return calls, hold


def run(calls: int | None = None, hold_s: float | None = None) -> None:
    if importlib.util.find_spec("recorder.siprec.server") is None:
        print("skipped: the SIPREC server (recorder.siprec.server) is not in this build")
        return
    default_calls, default_hold = size([])
    print(f"load average {load()} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-siprec-") as tmp:
        capacity(Path(tmp), calls or default_calls, hold_s or default_hold)
    print(f"load average {load()}")


if __name__ == "__main__":
    run(*size(sys.argv[1:]))
