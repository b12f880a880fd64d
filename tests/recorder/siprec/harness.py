"""The SIPREC end-to-end tests' common parts: a gateway on loopback and its recordings."""

from __future__ import annotations

import time
from array import array
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx2 as httpx
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import Clock, Tenant, backend_settings
from tests.recorder.siprec.src import Call, Signalling, decode, metadata, multipart, sdp

MEDIA_TIMEOUT_S = 2.0


@contextmanager
def gateway(
    s3: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime, **settings: Any
) -> Iterator[TestClient]:
    """A started gateway (HTTP through the test client, SIP and RTP on loopback)."""
    backend = StorageBackend(
        backend_settings(
            s3,
            database_url,
            tmp_path,
            live_media_timeout_s=MEDIA_TIMEOUT_S,
            rtp_ports="41000-41999",
            **settings,
        )
    )
    backend.start(now=now)
    try:
        with TestClient(create_app(backend, clock=Clock(now)), raise_server_exceptions=False) as c:
            yield c
    finally:
        backend.stop()


def sip_port(client: TestClient) -> int:
    port: int = client.app.state.siprec.port  # type: ignore[attr-defined]
    return port


@contextmanager
def signalling(client: TestClient, transport: str = "udp") -> Iterator[Signalling]:
    sip = Signalling(sip_port(client), transport)
    try:
        yield sip
    finally:
        sip.close()


def siprec_offer(
    session_id: str,
    ports: tuple[int, ...] = (9000, 9002),
    parties: tuple[str, ...] = ("sip:+212612345678@pbx.example", "sip:+212522000000@pbx.example"),
    **sdp_options: Any,
) -> tuple[bytes, str]:
    """A multipart INVITE body: an SDP offer of ``ports`` and metadata naming the parties."""
    return multipart(sdp(ports, **sdp_options), metadata(session_id, parties))


def new_call(sip: Signalling, **fields: Any) -> Call:
    call = Call(sip, **fields)
    call.extra.append(("X-Callrec-Jurisdiction", "US-NY"))  # a one-party rule
    return call


def recording_of(
    client: TestClient, tenant: Tenant, call_id: str, within: float = 20.0
) -> dict[str, Any] | None:
    """The call's recording once it has settled (stored, or None if there is none)."""
    deadline = time.monotonic() + within
    while True:
        listed = client.get("/v1/recordings", headers=tenant.client_admin)
        assert listed.status_code == 200, listed.text
        found = [r for r in listed.json()["items"] if r["call_id"] == call_id]
        if found and found[0]["state"] != "recording":
            return dict(found[0])
        if client.app.state.live.active == 0 and not found:  # type: ignore[attr-defined]
            return None
        if time.monotonic() > deadline:
            raise AssertionError(f"call {call_id}'s recording did not settle: {found}")
        time.sleep(0.05)


def audio(client: TestClient, tenant: Tenant, recording_id: str) -> list[array[float]]:
    return decoded(client, tenant, recording_id)[1]


def decoded(
    client: TestClient, tenant: Tenant, recording_id: str
) -> tuple[int, list[array[float]]]:
    """The stored audio's rate and channels."""
    return decode(served(client, tenant, recording_id).content)


def served(client: TestClient, tenant: Tenant, recording_id: str) -> httpx.Response:
    """The audio route's answer for a recording."""
    response = client.get(f"/v1/recordings/{recording_id}/audio", headers=tenant.client_admin)
    assert response.status_code == 200, response.text
    return response
