"""Bad WHIP input leaves nothing behind: sockets, tasks, threads and spool files come back."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil
import pytest
from aiortc import RTCConfiguration, RTCPeerConnection
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import Clock, Tenant, backend_settings, make_tenant
from tests.recorder.test_whip import SDP, Publisher, Tone, _decide, _run

MEDIA_TIMEOUT_S = 2
# Idle workers of thread pools come and stay: a pool, not a leak.
POOLS = ("asyncio_", "AnyIO worker thread")


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path


@pytest.fixture
def leak_backend(
    s3_server: EmbeddedS3, database_url: str, data_dir: Path, now: datetime
) -> Iterator[StorageBackend]:
    settings = backend_settings(
        s3_server, database_url, data_dir, live_media_timeout_s=MEDIA_TIMEOUT_S
    )
    backend = StorageBackend(settings)
    backend.start(now=now)
    yield backend
    backend.stop()


@pytest.fixture
def client(leak_backend: StorageBackend, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(leak_backend, clock=clock), raise_server_exceptions=False) as c:
        yield c


@dataclass(frozen=True)
class Footprint:
    """What a WHIP session holds while it lives, counted from outside."""

    udp_sockets: int
    tasks: int
    threads: int
    spool_files: int


def _footprint(client: TestClient, data_dir: Path) -> Footprint:
    loop = client.app.state.live._loop_task.get_loop()  # type: ignore[attr-defined]
    spool = data_dir / "spool"
    return Footprint(
        udp_sockets=len(psutil.Process().net_connections(kind="udp")),
        tasks=len(asyncio.all_tasks(loop)),
        threads=sum(1 for t in threading.enumerate() if not t.name.startswith(POOLS)),
        spool_files=len(list(spool.iterdir())) if spool.exists() else 0,
    )


def _settles(client: TestClient, data_dir: Path, baseline: Footprint, within: float) -> Footprint:
    """The footprint once it is back at the baseline; the last one seen if it never is."""
    deadline = time.monotonic() + within
    seen = _footprint(client, data_dir)
    while seen != baseline and time.monotonic() < deadline:
        time.sleep(0.05)
        seen = _footprint(client, data_dir)
    return seen


def _offer_sdp(*, tones: int = 1, video: bool = False) -> str:
    async def offer() -> str:
        pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
        for _ in range(tones):
            pc.addTransceiver(Tone(440), direction="sendonly")
        if video:
            pc.addTransceiver("video", direction="sendonly")
        await pc.setLocalDescription(await pc.createOffer())
        sdp: str = pc.localDescription.sdp
        await pc.close()
        return sdp

    return str(_run(offer))


def _only_pcmu(sdp: str) -> str:
    """The offer's audio with PCMU alone: a codec the gateway does not take live."""
    sdp = re.sub(r"(m=audio \d+ \S+) [\d ]+", r"\1 0", sdp)
    kept = [
        line for line in sdp.split("\r\n") if not re.match(r"a=(rtpmap|fmtp|rtcp-fb):(?!0 )", line)
    ]
    return "\r\n".join(kept)


def _pointing_nowhere(sdp: str) -> str:
    """The offer with one candidate, on a loopback port where nothing listens."""
    lines = [line for line in sdp.split("\r\n") if not line.startswith("a=candidate:")]
    at = next(i for i, line in enumerate(lines) if line.startswith("a=ice-ufrag:"))
    lines.insert(at, "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host")
    return "\r\n".join(lines).replace("a=end-of-candidates\r\n", "")


def _post(client: TestClient, tenant: Tenant, decision: dict[str, Any], sdp: str) -> Any:
    return client.post(
        decision["whip_url"], content=sdp.encode(), headers={**tenant.integrator, **SDP}
    )


BAD_OFFERS: list[tuple[str, Callable[[], str], int, str]] = [
    ("malformed", lambda: _offer_sdp().replace("a=fingerprint:", "a=fingerprint:x "), 422, ""),
    ("no-audio", lambda: _offer_sdp(tones=0, video=True), 422, "invalid_sdp"),
    ("only-pcmu", lambda: _only_pcmu(_offer_sdp()), 422, "invalid_sdp"),
    ("truncated", lambda: _offer_sdp()[:400], 422, "invalid_sdp"),
]


@pytest.mark.parametrize(
    ("make", "status", "error"),
    [case[1:] for case in BAD_OFFERS],
    ids=[case[0] for case in BAD_OFFERS],
)
def test_a_refused_offer_leaves_nothing(
    client: TestClient, data_dir: Path, make: Callable[[], str], status: int, error: str
) -> None:
    tenant = make_tenant(client)
    sdp = make()
    decision = _decide(client, tenant, "refused")  # the gateway's own threads start here
    baseline = _footprint(client, data_dir)

    response = _post(client, tenant, decision, sdp)

    assert response.status_code == status, response.text
    if error:
        assert response.json()["error"] == error
    assert client.app.state.live.active == 0  # type: ignore[attr-defined]
    assert _settles(client, data_dir, baseline, within=5) == baseline
    assert client.get("/v1/recordings", headers=tenant.client_admin).json()["items"] == []


def test_ice_that_never_completes_is_released_with_nothing_kept(
    client: TestClient, data_dir: Path, leak_backend: StorageBackend
) -> None:
    tenant = make_tenant(client)
    sdp = _pointing_nowhere(_offer_sdp())
    decision = _decide(client, tenant, "nowhere")  # the gateway's own threads start here
    baseline = _footprint(client, data_dir)

    response = _post(client, tenant, decision, sdp)

    assert response.status_code == 201, response.text
    assert client.app.state.live.active == 1  # type: ignore[attr-defined]
    during = _footprint(client, data_dir)  # the counts see a session that lives
    assert during.udp_sockets > baseline.udp_sockets and during.tasks > baseline.tasks
    assert during.spool_files == baseline.spool_files + 1
    # Released by the media timeout (or ICE's own failure, whichever comes first). The
    # session counts as live until its discard is committed, which comes after its
    # sockets and its spool are gone: wait for that, then for the footprint.
    live = client.app.state.live  # type: ignore[attr-defined]
    deadline = time.monotonic() + MEDIA_TIMEOUT_S + 10
    while live.active and time.monotonic() < deadline:
        time.sleep(0.05)
    assert live.active == 0
    assert _settles(client, data_dir, baseline, within=5) == baseline
    listed = client.get("/v1/recordings", headers=tenant.client_admin).json()["items"]
    assert [r["state"] for r in listed] == ["failed"]
    assert not any(key.startswith(f"{tenant.id}/") for key in leak_backend.store.list_keys())


def test_a_used_decision_and_another_tenants_session_are_refused_and_leave_nothing(
    client: TestClient, data_dir: Path
) -> None:
    tenant, other = make_tenant(client), make_tenant(client, "globex")
    decision = _decide(client, tenant, "used-twice")
    baseline = _footprint(client, data_dir)

    async def call() -> tuple[Any, Any, Any]:
        publisher = Publisher(client, tenant.integrator, [440])
        await publisher.publish(decision["whip_url"])
        second = Publisher(client, tenant.integrator, [440])
        again = await second.offer(decision["whip_url"])
        await second.pc.close()
        foreign = await asyncio.to_thread(
            client.delete, publisher.location, headers=other.integrator
        )
        assert client.app.state.live.active == 1  # type: ignore[attr-defined]
        during = _footprint(client, data_dir)
        assert during.threads > baseline.threads  # aiortc's receiver thread, until closed
        await asyncio.sleep(0.5)  # the session goes on recording
        return again, foreign, await publisher.stop()

    again, foreign, ended = _run(call)

    assert again.status_code == 409, again.text
    assert foreign.status_code == 404, foreign.text
    assert foreign.json()["error"] == "unknown_session"
    assert ended.status_code == 200 and ended.json()["state"] == "ended"
    assert _settles(client, data_dir, baseline, within=5) == baseline
