"""Concurrent WHIP sessions on one gateway, against stock aiortc recording the same streams.

The gateway is the real thing: ``callrec serve`` in a subprocess on its embedded
defaults (SQLite, its own SeaweedFS), ``CALLREC_ICE_ADDRESSES=127.0.0.1`` and a session
limit above the load. The publishers run in another process (``bench.whip_publishers``):
real aiortc peer connections (ICE, DTLS, SRTP) on loopback, one audio track each, fed
Opus encoded once per tone at start and replayed in real time, so that no publisher
encodes anything while the gateway is measured (aiortc's sender takes ``av.Packet``
frames and only packetizes them). Each session is a call: the call hook's decision,
then ``POST /v1/whip/{decision}``; sessions start at ``RAMP_PER_S`` a second, all of
them stream for ``HOLD_S`` seconds, then each is ended with ``DELETE``.

Figures:

- loss at the recorder: from the gateway's ``/metrics`` after the run, packets lost
  (numbered by a sender, never arrived) plus late (arrived after their place in the
  recording was written), over the packets the publishers sent; goal < 1 %;
- every recording stored: each ``DELETE`` answers ``ended`` with a recording id, and
  each of those recordings reads back ``stored``;
- CPU and RSS per session of the gateway process (psutil; its SeaweedFS child apart,
  shown on its own): CPU over the hold with every session streaming, RSS at the end of
  the hold above the RSS before the first session, each divided by the sessions;
- ``POST`` → ``201`` latency (the WHIP offer only, not the call hook): p50 and p95 over
  every session, and p95 over those offered while at least 3/4 of the sessions were
  already streaming; goal p95 ≤ 100 ms;
- the ratio of callrec's CPU per session to stock aiortc's (``bench.whip_stock``:
  ``MediaRecorder`` to Ogg/Opus, which decodes and encodes again) with the same
  publishers in the same run, at ``COMPARE_SESSIONS`` (both must keep up there);
  goal ≤ 0.3;
- the publishers' own CPU, and the share of packets they sent more than 80 ms behind
  time: lateness that starts on their side, not the gateway's.

``python -m bench.whip_sessions [SESSIONS ...]`` runs the capacity figures at each
count given (default ``SESSIONS``).
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import psutil

from bench.call_hook import make_tenant

HOST = "127.0.0.1"
SESSIONS = 100
COMPARE_SESSIONS = 20
RAMP_PER_S = 10.0
HOLD_S = 20.0
TARGET_LOSS = 0.01
TARGET_P95_MS = 100.0
TARGET_RATIO = 0.3


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        port: int = probe.getsockname()[1]
        return port


def wait_ready(url: str, process: subprocess.Popen[bytes], within: float = 60.0) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{url}: the server exited with {process.returncode}")
        try:
            if httpx.get(url, timeout=1).status_code < 500:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {within} s")


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    key: str  # the integrator's
    admin: str = ""

    @property
    def ps(self) -> psutil.Process:
        return psutil.Process(self.process.pid)

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_gateway(workdir: Path, sessions: int) -> Server:
    port, admin = free_port(), "admin-" + secrets.token_urlsafe(24)
    env = {
        **os.environ,
        "CALLREC_DATA_DIR": str(workdir / "var"),
        "CALLREC_HTTP_HOST": HOST,
        "CALLREC_HTTP_PORT": str(port),
        "CALLREC_SIP_PORT": str(free_port()),
        "CALLREC_ADMIN_KEY": admin,
        "CALLREC_ICE_ADDRESSES": HOST,
        "CALLREC_LIVE_MAX_SESSIONS": str(sessions + 50),
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
    return Server(process, url, key, admin)


def start_stock(workdir: Path) -> Server:
    port = free_port()
    (workdir / "stock").mkdir(exist_ok=True)
    log = (workdir / "stock.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.whip_stock", str(port), str(workdir / "stock")],
        stdout=log,
        stderr=log,
    )
    url = f"http://{HOST}:{port}"
    wait_ready(f"{url}/docs", process)
    return Server(process, url, "")


@dataclass
class Run:
    sessions: int
    cpu_share: float  # of one core, the server process, over the hold
    weed_cpu_share: float
    rss_before: int
    rss_held: int
    publisher: dict[str, Any]

    @property
    def cpu_per_session(self) -> float:
        return self.cpu_share / self.sessions

    @property
    def rss_per_session(self) -> float:
        return (self.rss_held - self.rss_before) / self.sessions


def drive(server: Server, mode: str, sessions: int, tag: str) -> Run:
    """Run the publishers against ``server``; measure the server over the hold."""
    config = {
        "url": server.url,
        "key": server.key,
        "mode": mode,
        "sessions": sessions,
        "ramp_per_s": RAMP_PER_S,
        "hold_s": HOLD_S,
        "tag": tag,
    }
    ps = server.ps
    weeds = [c for c in ps.children(recursive=True) if "weed" in c.name()]
    rss_before = ps.memory_info().rss
    publishers = subprocess.Popen(
        [sys.executable, "-m", "bench.whip_publishers", json.dumps(config)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert publishers.stdout is not None
    lines = iter(publishers.stdout.readline, "")
    if next(lines).strip() != "ramped":
        raise RuntimeError("the publishers did not ramp up")
    cpu0, weed0, wall0 = _cpu(ps), sum(_cpu(w) for w in weeds), time.monotonic()
    if next(lines).strip() != "held":
        raise RuntimeError("the publishers did not hold")
    cpu1, weed1, wall1 = _cpu(ps), sum(_cpu(w) for w in weeds), time.monotonic()
    rss_held = ps.memory_info().rss
    result = json.loads(next(lines))
    if publishers.wait() != 0:
        raise RuntimeError("the publishers failed")
    wall = wall1 - wall0
    return Run(sessions, (cpu1 - cpu0) / wall, (weed1 - weed0) / wall, rss_before, rss_held, result)


def _cpu(process: psutil.Process) -> float:
    times = process.cpu_times()
    return float(times.user + times.system)


def metric(body: str, name: str) -> float:
    for line in body.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    return 0.0


def check_gateway(server: Server, run: Run, before: str) -> dict[str, Any]:
    """Loss from the gateway's own figures; every recording read back."""
    after = httpx.get(f"{server.url}/metrics", timeout=30).text

    def delta(name: str) -> float:
        return metric(after, name) - metric(before, name)

    sent = run.publisher["sent"]
    received = delta("callrec_live_packets_received_total")
    lost = delta("callrec_live_packets_lost_total")
    late = delta("callrec_live_packets_late_total")
    headers = {"Authorization": f"Bearer {server.admin}"}
    stored = 0
    for status, body in run.publisher["ended"]:
        if status == 200 and body.get("state") == "ended" and body.get("recording_id"):
            answer = httpx.get(
                f"{server.url}/v1/recordings/{body['recording_id']}", headers=headers, timeout=30
            )
            stored += answer.status_code == 200 and answer.json()["state"] == "stored"
    return {
        "sent": sent,
        "received": received,
        "lost": lost,
        "late": late,
        # Packets sent that are not in a recording: never arrived, or arrived too late.
        "loss": (sent - received + late) / sent if sent else 1.0,
        # The gateway's own view (RFC 3550 from sequence numbers), blind to a lost tail.
        "loss_seen": (lost + late) / (received + lost) if received else 1.0,
        "stored": stored,
    }


def capacity(workdir: Path, sessions: int) -> None:
    gateway = start_gateway(workdir / f"gw-{sessions}", sessions)
    try:
        before = httpx.get(f"{gateway.url}/metrics", timeout=30).text
        run = drive(gateway, "callrec", sessions, f"cap{sessions}")
        seen = check_gateway(gateway, run, before)
    finally:
        gateway.stop()
    pub = run.publisher
    print(
        f"{sessions} sessions: loss {100 * seen['loss']:.3f} % "
        f"(the gateway's own figures {100 * seen['loss_seen']:.3f} %; sent {seen['sent']}, "
        f"received {seen['received']:.0f}, lost {seen['lost']:.0f}, late {seen['late']:.0f}); "
        f"stored {seen['stored']}/{sessions}"
    )
    print(
        f"  gateway CPU {100 * run.cpu_share:.0f} % of a core = "
        f"{100 * run.cpu_per_session:.2f} % per session; its SeaweedFS "
        f"{100 * run.weed_cpu_share:.0f} %; publishers {100 * pub['publisher_cpu_share']:.0f} %, "
        f"which sent {100 * pub['behind'] / pub['sent']:.2f} % of packets > 80 ms behind time"
    )
    print(
        f"  gateway RSS {run.rss_before / 2**20:.0f} → {run.rss_held / 2**20:.0f} MiB = "
        f"{run.rss_per_session / 2**10:.0f} KiB per session"
    )
    loaded = pub["post_loaded_p95_ms"] or float("nan")
    print(
        f"  POST → 201: p50 {pub['post_p50_ms']:.0f} ms, p95 {pub['post_p95_ms']:.0f} ms, "
        f"max {pub['post_max_ms']:.0f} ms; p95 with ≥ 3/4 streaming "
        f"{loaded:.0f} ms (n={pub['post_loaded_n']})"
    )
    ok = (
        seen["loss"] < TARGET_LOSS
        and seen["stored"] == sessions
        and pub["post_p95_ms"] <= TARGET_P95_MS
    )
    print(f"  goals (loss < 1 %, all stored, p95 ≤ 100 ms): {'met' if ok else 'NOT met'}")


def compare(workdir: Path, sessions: int = COMPARE_SESSIONS) -> None:
    gateway = start_gateway(workdir / "gw-compare", sessions)
    try:
        before = httpx.get(f"{gateway.url}/metrics", timeout=30).text
        ours = drive(gateway, "callrec", sessions, "cmp")
        seen = check_gateway(gateway, ours, before)
    finally:
        gateway.stop()
    stock_server = start_stock(workdir)
    try:
        stock = drive(stock_server, "stock", sessions, "stock")
    finally:
        stock_server.stop()
    ended = sum(1 for status, _ in stock.publisher["ended"] if status == 200)
    ratio = ours.cpu_per_session / stock.cpu_per_session
    print(
        f"{sessions} sessions each: callrec {100 * ours.cpu_per_session:.2f} % of a core per "
        f"session (loss {100 * seen['loss']:.3f} %, stored {seen['stored']}/{sessions}), "
        f"stock MediaRecorder {100 * stock.cpu_per_session:.2f} % ({ended}/{sessions} ended); "
        f"ratio {ratio:.2f} (target ≤ {TARGET_RATIO})"
    )
    print(
        f"  RSS per session: callrec {ours.rss_per_session / 2**10:.0f} KiB, "
        f"stock {stock.rss_per_session / 2**10:.0f} KiB; POST → 201 p95: callrec "
        f"{ours.publisher['post_p95_ms']:.0f} ms, stock {stock.publisher['post_p95_ms']:.0f} ms"
    )


def load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def run(counts: list[int] | None = None) -> None:
    print(f"load average {load()} on {os.cpu_count()} cores")
    with tempfile.TemporaryDirectory(prefix="bench-whip-") as tmp:
        workdir = Path(tmp)
        compare(workdir)
        for sessions in counts or [SESSIONS]:
            capacity(workdir, sessions)
    print(f"load average {load()}")


if __name__ == "__main__":
    run([int(arg) for arg in sys.argv[1:]] or None)
