"""One recording per call, decided by the database; a hold placed meanwhile is never lost."""

from __future__ import annotations

import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session, select

from retention.holds import HoldRequest, place_hold
from storage.backend import StorageBackend
from storage.catalog import Recording, RecordingState
from storage.db import session_scope
from storage.objectstore import ObjectStore
from storage.vault import Vault
from tests.recorder.conftest import Clock, call_body, make_tenant, tone_wav

UPLOADS = 3


def _upload(client: TestClient, headers: dict[str, str], body: bytes, call_id: str) -> Any:
    return client.put(
        f"/v1/calls/{call_id}/recording",
        content=body,
        headers={**headers, "Content-Type": "audio/wav"},
    )


def test_concurrent_uploads_for_one_call_store_one(
    client: TestClient,
    backend: StorageBackend,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tenant = make_tenant(client)
    assert client.post("/v1/calls", json=call_body(), headers=tenant.integrator).json()["record"]
    body = tone_wav(tmp_path / "call.wav", seconds=1.0).read_bytes()
    # Every upload passes the checks before any of them catalogs its recording: the
    # moment a check before the insert cannot decide.
    everyone_checked = threading.Barrier(UPLOADS, timeout=30)
    begin = Vault.begin

    def begin_together(self: Vault, *args: Any, **kwargs: Any) -> Any:
        everyone_checked.wait()
        return begin(self, *args, **kwargs)

    monkeypatch.setattr(Vault, "begin", begin_together)
    with ThreadPoolExecutor(UPLOADS) as pool:
        answers = list(
            pool.map(lambda _: _upload(client, tenant.integrator, body, "call-1"), range(UPLOADS))
        )
    statuses = sorted(a.status_code for a in answers)
    assert statuses == [201] + [409] * (UPLOADS - 1), [a.text for a in answers]
    assert {a.json()["error"] for a in answers if a.status_code == 409} == {"recording_exists"}
    with Session(backend.engine) as session:
        rows = list(session.exec(select(Recording).where(Recording.call_id == "call-1")))
    assert [r.state for r in rows] == [RecordingState.STORED]
    assert list(backend.store.list_keys("acme/")) == [rows[0].object_key]
    # A later upload is refused as well, before its body is even read.
    assert _upload(client, tenant.integrator, body, "call-1").status_code == 409


def _hold_when(
    backend: StorageBackend, clock: Clock, owner: type, name: str, request: HoldRequest
) -> Callable[..., Any]:
    """``owner.name`` that opens a legal hold case just before (or after) it runs."""
    original = getattr(owner, name)

    def place() -> None:
        with session_scope(backend.engine) as session:
            place_hold(
                session,
                request=request,
                store=backend.store,
                actor="compliance:test",
                audit=backend.audit,
                now=clock.now,
            )

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if name == "begin":
            place()
            return original(*args, **kwargs)
        result = original(*args, **kwargs)
        place()
        return result

    return wrapper


@pytest.mark.parametrize(
    ("owner", "name", "covers"),
    [
        # The upload has checked for holds; its recording is not in the catalog yet.
        (Vault, "begin", {"client_id": "acme"}),
        # The object is complete in S3, with its tags; the catalog says "recording".
        (ObjectStore, "put_file", {"call_ids": ["call-1"]}),
    ],
    ids=["before-catalog", "object-complete"],
)
def test_a_hold_placed_while_storing_tags_the_object(
    client: TestClient,
    backend: StorageBackend,
    clock: Clock,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    owner: type,
    name: str,
    covers: dict[str, Any],
) -> None:
    tenant = make_tenant(client)
    client.post("/v1/calls", json=call_body(), headers=tenant.integrator)
    request = HoldRequest(reason="litigation 2026-31", **covers)
    monkeypatch.setattr(owner, name, _hold_when(backend, clock, owner, name, request))
    body = tone_wav(tmp_path / "call.wav", seconds=1.0).read_bytes()
    answer = _upload(client, tenant.integrator, body, "call-1")
    assert answer.status_code == 201, answer.text
    recording = answer.json()
    assert recording["legal_hold"] is True
    key = f"acme/2026/11/28/{recording['id']}.ogg"
    assert backend.store.get_tags(key)["legal-hold"] == "true"
