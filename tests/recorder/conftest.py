"""An API client on a started backend: real SeaweedFS, real database, an admin key."""

from __future__ import annotations

import math
import secrets
import struct
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.embedded_s3 import EmbeddedS3
from storage.settings import Settings

ADMIN_KEY = "admin-" + secrets.token_urlsafe(24)


def backend_settings(s3: EmbeddedS3, database_url: str, data_dir: Path, **extra: Any) -> Settings:
    """Settings for a backend on the test SeaweedFS and a test database."""
    s3_config = s3.config(f"app-{secrets.token_hex(4)}")
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        s3_endpoint_url=s3_config.endpoint_url,
        s3_access_key_id=s3_config.access_key_id,
        s3_secret_access_key=s3_config.secret_access_key,
        s3_bucket=s3_config.bucket,
        master_key=secrets.token_urlsafe(32)[:43] + "=",
        admin_key=ADMIN_KEY,
        # Media to loopback only; an ephemeral SIPREC port, as tests run side by side.
        **{"ice_addresses": ["127.0.0.1"], "sip_port": 0, **extra},
    )


@pytest.fixture
def backend(
    s3_server: EmbeddedS3, database_url: str, tmp_path: Path, now: datetime
) -> Iterator[StorageBackend]:
    backend = StorageBackend(backend_settings(s3_server, database_url, tmp_path))
    backend.start(now=now)
    yield backend
    backend.stop()


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def clock(now: datetime) -> Clock:
    return Clock(now)


@pytest.fixture
def client(backend: StorageBackend, clock: Clock) -> Iterator[TestClient]:
    with TestClient(create_app(backend, clock=clock), raise_server_exceptions=False) as client:
        yield client


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


ADMIN = auth(ADMIN_KEY)


@dataclass
class Tenant:
    """A client with its keys and an active grant."""

    id: str
    integrator: dict[str, str]
    client_admin: dict[str, str]
    grant: dict[str, Any]


def make_tenant(
    client: TestClient, client_id: str = "acme", *, notice: str = "contract", **grant: Any
) -> Tenant:
    response = client.post(
        "/v1/clients",
        json={"id": client_id, "name": client_id.title(), "country": "MA"},
        headers=ADMIN,
    )
    assert response.status_code == 201, response.text
    keys = {}
    for role in ("integrator", "client_admin"):
        response = client.post(
            f"/v1/clients/{client_id}/api-keys", json={"role": role}, headers=ADMIN
        )
        assert response.status_code == 201, response.text
        keys[role] = auth(response.json()["key"])
    body: dict[str, Any] = {
        "purposes": ["research", "improvement"],
        "notice": notice,
        "granted_by": "Data protection officer",
        "evidence": "contract #42 signed 2026-11-01",
    }
    if notice == "announcement":
        body["notice_sha256"] = "a" * 64
        body["notice_version"] = "v1"
    body.update(grant)
    response = client.post(
        f"/v1/clients/{client_id}/consents", json=body, headers=keys["client_admin"]
    )
    assert response.status_code == 201, response.text
    return Tenant(client_id, keys["integrator"], keys["client_admin"], response.json())


def call_body(call_id: str = "call-1", **extra: Any) -> dict[str, Any]:
    body = {
        "call_id": call_id,
        "direction": "inbound",
        "from": "+212612345678",
        "to": "+212522000000",
        "channel": "upload",
        "jurisdiction": "US-NY",
    }
    body.update(extra)
    return body


def tone_wav(path: Path, seconds: float = 2.0, rate: int = 8000, channels: int = 1) -> Path:
    """A plain PCM WAV tone (440 Hz left, 660 Hz right)."""
    with wave.open(str(path), "wb") as out:
        out.setnchannels(channels)
        out.setsampwidth(2)
        out.setframerate(rate)
        frames = bytearray()
        for i in range(int(seconds * rate)):
            for channel in range(channels):
                value = math.sin(2 * math.pi * (440 + 220 * channel) * i / rate)
                frames += struct.pack("<h", int(value * 12000))
        out.writeframes(bytes(frames))
    return path
