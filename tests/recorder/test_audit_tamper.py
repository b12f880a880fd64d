"""Tampering with the audit log while the gateway is stopped is never re-anchored.

The gateway starts on the tampered chain, refuses every operation that would append
to it, says so on ``/readyz``, ``/metrics`` and one CRITICAL line, and ``callrec audit
verify`` keeps failing afterwards.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from recorder.app import create_app
from storage.backend import StorageBackend
from storage.db import create_db_engine
from tests.recorder.conftest import ADMIN, Clock, auth, call_body, make_tenant, tone_wav
from tests.storage.test_audit import rehash_from


def _upload(client: TestClient, headers: dict[str, str], wav: Path, call_id: str) -> str:
    response = client.put(
        f"/v1/calls/{call_id}/recording",
        content=wav.read_bytes(),
        headers={**headers, "Content-Type": "audio/wav"},
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


def _cut_the_newest_three(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(
            sa.text("DELETE FROM audit_events WHERE seq > (SELECT max(seq) - 3 FROM audit_events)")
        )


def _edit_one_and_rehash(engine: sa.Engine) -> None:
    with engine.begin() as connection:
        connection.execute(sa.text("UPDATE audit_events SET actor = 'intruder' WHERE seq = 5"))
    rehash_from(engine, 5)


def _events(engine: sa.Engine) -> list[tuple[int, str]]:
    with engine.connect() as connection:
        rows = connection.execute(sa.text("SELECT seq, hash FROM audit_events ORDER BY seq"))
        return [(int(r.seq), str(r.hash)) for r in rows]


def _callrec(backend: StorageBackend, *args: str) -> subprocess.CompletedProcess[str]:
    settings = backend.settings
    assert settings.master_key is not None
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env.update(
        CALLREC_DATA_DIR=str(settings.data_dir),
        CALLREC_DATABASE_URL=settings.resolved_database_url,
        CALLREC_MASTER_KEY=settings.master_key.get_secret_value(),
    )
    return subprocess.run(
        [sys.executable, "-m", "recorder", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("tamper", [_cut_the_newest_three, _edit_one_and_rehash])
def test_a_gateway_started_on_a_tampered_chain_appends_nothing(
    backend: StorageBackend,
    clock: Clock,
    tmp_path: Path,
    tamper: Callable[[sa.Engine], None],
    caplog: pytest.LogCaptureFixture,
) -> None:
    wav = tone_wav(tmp_path / "tone.wav", seconds=0.5)
    with TestClient(create_app(backend, clock=clock), raise_server_exceptions=False) as client:
        tenant = make_tenant(client)
        compliance = auth(
            client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN).json()["key"]
        )
        for call_id in ("call-1", "call-2"):
            decided = client.post("/v1/calls", json=call_body(call_id), headers=tenant.integrator)
            assert decided.json()["record"] is True, decided.text
        recording = _upload(client, tenant.integrator, wav, "call-1")
        assert client.get("/readyz").status_code == 200
    backend.stop()

    engine = create_db_engine(backend.settings.resolved_database_url)
    try:
        tamper(engine)
        before = _events(engine)
        caplog.set_level(logging.CRITICAL, logger="storage.audit")
        restarted = StorageBackend(backend.settings)
        restarted.start(now=clock.now)
        try:
            app = create_app(restarted, clock=clock)
            with TestClient(app, raise_server_exceptions=False) as client:
                hook = client.post("/v1/calls", json=call_body("call-3"), headers=tenant.integrator)
                assert hook.status_code == 200, hook.text
                assert (hook.json()["record"], hook.json()["reason"]) == (
                    False,
                    "consent_unavailable",
                )
                refused = [
                    client.put(
                        "/v1/calls/call-2/recording",
                        content=wav.read_bytes(),
                        headers={**tenant.integrator, "Content-Type": "audio/wav"},
                    ),
                    client.post(
                        "/v1/legal-holds",
                        json={"reason": "inquiry", "client_id": "acme"},
                        headers=compliance,
                    ),
                    client.post(
                        "/v1/clients/acme/consents/" + tenant.grant["id"] + "/revoke",
                        json={"reason": "ended", "purge_existing": True},
                        headers=tenant.client_admin,
                    ),
                    client.get(f"/v1/recordings/{recording}/audio", headers=compliance),
                    client.post(
                        "/v1/clients",
                        json={"id": "globex", "name": "Globex", "country": "MA"},
                        headers=ADMIN,
                    ),
                ]
                for response in refused:
                    assert response.status_code == 503, response.text
                    assert response.json()["error"] == "audit_chain_broken"

                ready = client.get("/readyz")
                assert ready.status_code == 503
                assert "audit chain broken" in ready.json()["detail"]
                assert "callrec_audit_chain_ok 0.0" in client.get("/metrics").text
                verify = client.get("/v1/audit/verify", headers=compliance).json()
                assert verify["ok"] is False
        finally:
            restarted.stop()
        assert _events(engine) == before  # not one event appended, none rewritten
        critical = [r.getMessage() for r in caplog.records if r.levelno == logging.CRITICAL]
        assert critical and "audit chain broken at event" in critical[0]
    finally:
        engine.dispose()

    create = _callrec(backend, "clients", "create", "globex", "--name", "G", "--country", "MA")
    assert create.returncode == 2, create.stdout + create.stderr
    assert "callrec: audit chain broken" in create.stderr
    result = _callrec(backend, "audit", "verify")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "BROKEN" in result.stderr


def test_an_intact_chain_reports_ok(backend: StorageBackend, clock: Clock) -> None:
    with TestClient(create_app(backend, clock=clock)) as client:
        make_tenant(client)
        assert client.get("/readyz").status_code == 200
        assert "callrec_audit_chain_ok 1.0" in client.get("/metrics").text
