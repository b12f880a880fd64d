"""Signed evidence packs: a client's real activity packed and verified, then altered in each
way and refused with the alteration named; an empty period; the signing key."""

from __future__ import annotations

import hashlib
import io
import json
import os
import stat
import threading
import zipfile
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlmodel import Session

from retention.evidence_pack import build_pack
from retention.pack_format import EVENTS, MANIFEST, SIGNATURE, check_pack
from storage.backend import StorageBackend
from storage.errors import ConfigError
from storage.settings import Settings
from storage.signing import SigningKey, parse_public_key, parse_signing_key, signing_key
from tests.recorder.conftest import ADMIN, Clock, call_body, make_tenant, tone_wav

PHONES = ("+212612345678", "+212522000000", "+212611111111")


def _ok(response: Any) -> Any:
    assert response.status_code < 300, response.text
    return response.json()


def _store(client: TestClient, tmp_path: Path, integrator: dict[str, str], call_id: str) -> str:
    body = tone_wav(tmp_path / f"{call_id}.wav", seconds=0.3).read_bytes()
    headers = {**integrator, "Content-Type": "audio/wav"}
    return str(
        _ok(client.put(f"/v1/calls/{call_id}/recording", content=body, headers=headers))["id"]
    )


def _activity(client: TestClient, tmp_path: Path) -> dict[str, str]:
    """acme: a grant, two decisions, a stored recording, another erased (a certificate),
    a revoked grant; globex: a grant and a decision (withheld from acme's pack)."""
    acme = make_tenant(client, "acme")
    globex = make_tenant(client, "globex")
    _ok(client.post("/v1/calls", json=call_body("kept"), headers=acme.integrator))
    kept = _store(client, tmp_path, acme.integrator, "kept")
    erased_call = call_body("erased", **{"from": PHONES[2]})
    _ok(client.post("/v1/calls", json=erased_call, headers=acme.integrator))
    erased = _store(client, tmp_path, acme.integrator, "erased")
    request = {"client_id": "acme", "kind": "erasure", "phone": PHONES[2]}
    erasure = _ok(client.post("/v1/subject-requests", json=request, headers=acme.client_admin))
    extra = {"purposes": ["research"], "notice": "contract", "granted_by": "DPO", "evidence": "x"}
    second = _ok(client.post("/v1/clients/acme/consents", json=extra, headers=acme.client_admin))
    _ok(
        client.post(
            f"/v1/clients/acme/consents/{second['id']}/revoke",
            json={"reason": "replaced", "purge_existing": False},
            headers=acme.client_admin,
        )
    )
    _ok(client.post("/v1/calls", json=call_body("g"), headers=globex.integrator))
    return {"kept": kept, "erased": erased, "erasure": erasure["id"], "grant": acme.grant["id"]}


def _pack(
    backend: StorageBackend,
    key: SigningKey,
    clock: Clock,
    *,
    client_id: str | None = "acme",
    start: datetime | None = None,
    end: datetime | None = None,
) -> bytes:
    with Session(backend.engine) as session:
        return build_pack(
            session,
            client_id=client_id,
            start=start or clock.now - timedelta(hours=1),
            end=end or clock.now + timedelta(hours=1),
            audit=backend.audit,
            key=key,
            now=clock.now,
        )


def _members(data: bytes) -> dict[str, bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return {info.filename: archive.read(info) for info in archive.infolist()}


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, body in members.items():
            archive.writestr(name, body)
    return buffer.getvalue()


def _with_manifest_hash(members: dict[str, bytes], name: str) -> dict[str, bytes]:
    """The members with ``name``'s entry in the manifest updated to its new bytes."""
    manifest = json.loads(members[MANIFEST])
    for entry in manifest["files"]:
        if entry["path"] == name:
            entry["sha256"] = hashlib.sha256(members[name]).hexdigest()
            entry["size"] = len(members[name])
    text = json.dumps(manifest, indent=2, sort_keys=True) + "\n"
    return {**members, MANIFEST: text.encode()}


def _resigned(members: dict[str, bytes], key: SigningKey) -> dict[str, bytes]:
    manifest = json.loads(members[MANIFEST])
    manifest["signing_key"]["fingerprint"] = key.public.fingerprint
    manifest["signing_key"]["public_key"] = key.public.base64
    body = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return {
        **members,
        MANIFEST: body,
        SIGNATURE: key.sign(body),
        "public-key.pem": key.public.pem.encode(),
    }


def _events(members: dict[str, bytes]) -> list[dict[str, Any]]:
    return [json.loads(line) for line in members[EVENTS].decode().splitlines()]


def _refused(data: bytes, key: SigningKey, *expected: str) -> list[str]:
    check = check_pack(data, expected=key.public)
    assert not check.ok
    for words in expected:
        assert any(words in problem for problem in check.problems), (words, check.problems)
    return check.problems


def test_a_pack_of_a_clients_activity_verifies(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    ids = _activity(client, tmp_path)
    key = SigningKey.generate()
    data = _pack(backend, key, clock)

    check = check_pack(data, expected=key.public)
    assert check.ok, check.problems
    assert check.signed_by == key.public.fingerprint
    members = _members(data)
    assert list(members)[:3] == ["manifest.json", "manifest.sig", "public-key.pem"]
    manifest = json.loads(members[MANIFEST])
    assert [f["path"] for f in manifest["files"]] == sorted(set(members) - set(list(members)[:3]))
    assert manifest["parameters"] == {
        "client_id": "acme",
        "from": "2026-11-28T11:00:00.000000Z",
        "to": "2026-11-28T13:00:00.000000Z",
    }
    assert manifest["signing_key"]["fingerprint"] == key.public.fingerprint

    ledger = json.loads(members["consent/ledger.json"])
    assert [e["kind"] for e in ledger] == ["grant", "grant", "revoke"]
    assert ledger[0]["grant_id"] == ids["grant"]
    assert {e["client_id"] for e in ledger} == {"acme"}
    decisions = json.loads(members["decisions.json"])
    assert sorted(d["call_id"] for d in decisions) == ["erased", "kept"]
    certificates = json.loads(members["deletion-certificates.json"])
    assert [c["recording_id"] for c in certificates] == [ids["erased"]]
    assert certificates[0]["certificate"]["key_destroyed"] is True
    requests = json.loads(members["subject-requests.json"])
    assert [(r["id"], r["kind"]) for r in requests] == [(ids["erasure"], "erasure")]
    report = json.loads(members["report/retention.json"])
    assert report["client_id"] == "acme"
    assert b"<html" in members["report/retention.html"][:200].lower()

    events = _events(members)
    shown = [e for e in events if not e.get("withheld")]
    withheld = [e for e in events if e.get("withheld")]
    assert {e["client_id"] for e in shown} == {"acme"}
    assert withheld and all(set(e) == {"seq", "withheld", "prev_hash", "hash"} for e in withheld)
    assert manifest["audit"]["anchor_after"] == {
        "seq": events[-1]["seq"],
        "hash": events[-1]["hash"],
    }
    assert manifest["audit"]["anchor_before"]["seq"] == events[0]["seq"] - 1
    kinds = {e["kind"] for e in shown}
    assert {"consent.granted", "call.decided", "recording.stored", "recording.purged"} <= kinds
    # No phone number anywhere, in any form it was given.
    everything = b"".join(members.values())
    for phone in PHONES:
        assert phone.encode() not in everything and phone[1:].encode() not in everything

    # All clients: nothing withheld; globex's decision is there too.
    everyone = _members(_pack(backend, key, clock, client_id=None))
    assert not any(e.get("withheld") for e in _events(everyone))
    assert {d["client_id"] for d in json.loads(everyone["decisions.json"])} == {"acme", "globex"}
    assert check_pack(_zip(everyone), expected=key.public).ok


def test_every_alteration_is_refused_and_named(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    _activity(client, tmp_path)
    key = SigningKey.generate()
    members = _members(_pack(backend, key, clock))
    assert check_pack(_zip(members), expected=key.public).ok  # rezipped, still the same content

    changed = bytearray(members["decisions.json"])
    changed[10] ^= 0x01
    _refused(
        _zip({**members, "decisions.json": bytes(changed)}), key, "file decisions.json changed"
    )

    removed = {k: v for k, v in members.items() if k != "subject-requests.json"}
    _refused(_zip(removed), key, "file subject-requests.json removed")

    extra = {**members, "notes.txt": b"nothing to see"}
    _refused(_zip(extra), key, "extra file notes.txt")

    events = _events(members)
    swapped = list(events)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    lines = {**members, EVENTS: "".join(json.dumps(e) + "\n" for e in swapped).encode()}
    _refused(
        _zip(lines),
        key,
        f"file {EVENTS} changed",
        f"audit event at position 3 of {EVENTS} is event {events[3]['seq']}, "
        f"expected event {events[2]['seq']}",
    )

    # An event edited and the manifest updated to match, but not signed again.
    target = next(i for i, e in enumerate(events) if not e.get("withheld") and i > 0)
    edited = [dict(e) for e in events]
    edited[target]["actor"] = "someone-else"
    lines = {**members, EVENTS: "".join(json.dumps(e) + "\n" for e in edited).encode()}
    unsigned = _with_manifest_hash(lines, EVENTS)
    problems = _refused(
        _zip(unsigned),
        key,
        "bad signature",
        f"audit event at position {target + 1} of {EVENTS} (event {events[target]['seq']}) "
        "was edited",
    )
    assert not any(p.startswith("file ") for p in problems), problems  # hash made to match

    # The same edit signed again by another key: consistent, but not the expected signer.
    other = SigningKey.generate()
    forged = _zip(_resigned(unsigned, other))
    problems = _refused(
        forged, key, f"signed by key {other.public.fingerprint}, not by the expected"
    )
    assert check_pack(forged, expected=None).signed_by == other.public.fingerprint
    # (its events still tell the edit, whoever signed)
    assert any("was edited" in p for p in problems)

    # A manifest re-signed by another key over an otherwise untouched pack: only the signer.
    only_key = check_pack(_zip(_resigned(members, other)), expected=key.public)
    assert only_key.problems == [
        f"signed by key {other.public.fingerprint}, not by the expected key "
        f"{key.public.fingerprint}"
    ]

    _refused(b"not a zip", key, "not a readable zip")
    no_signature = {k: v for k, v in members.items() if k != SIGNATURE}
    _refused(_zip(no_signature), key, f"file {SIGNATURE} removed")


def test_a_period_with_no_data_is_an_empty_signed_pack(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    _activity(client, tmp_path)
    key = SigningKey.generate()
    start = clock.now + timedelta(days=10)
    data = _pack(backend, key, clock, start=start, end=start + timedelta(days=1))
    check = check_pack(data, expected=key.public)
    assert check.ok, check.problems
    assert check.events == 0
    members = _members(data)
    manifest = json.loads(members[MANIFEST])
    audit = manifest["audit"]
    assert audit["anchor_before"] == audit["anchor_after"]
    assert audit["anchor_before"]["seq"] > 0  # the newest event before the period
    for name in ("decisions.json", "deletion-certificates.json", "subject-requests.json"):
        assert json.loads(members[name]) == []
    assert members[EVENTS] == b""
    # An event appended to an empty period is found: the anchors say there are none.
    faked = {**members, EVENTS: members[EVENTS] + b'{"seq": 999}\n'}
    _refused(_zip(faked), key, "is event 999")


def test_a_bad_period_or_an_unknown_client_is_refused(
    backend: StorageBackend, clock: Clock
) -> None:
    from consent.errors import NotFound
    from retention.errors import InvalidRequest

    key = SigningKey.generate()
    with pytest.raises(InvalidRequest, match="before"):
        _pack(backend, key, clock, start=clock.now, end=clock.now)
    with pytest.raises(InvalidRequest, match="time zone"):
        _pack(backend, key, clock, start=datetime(2026, 1, 1), end=clock.now)
    with pytest.raises(InvalidRequest, match="1970 to 9998"):
        _pack(backend, key, clock, start=datetime(1, 1, 2, tzinfo=UTC), end=clock.now)
    with pytest.raises(NotFound):
        _pack(backend, key, clock, client_id="nobody")


def test_the_signing_key_is_generated_once_and_reused(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    first = signing_key(settings)
    path = tmp_path / "signing.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert signing_key(settings).public.fingerprint == first.public.fingerprint
    assert os.listdir(tmp_path) == ["signing.key"]  # no staging file left behind


def test_processes_starting_together_share_one_key(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "fresh")
    barrier = threading.Barrier(8)
    found: list[str] = []

    def start() -> None:
        barrier.wait()
        found.append(signing_key(settings).public.fingerprint)

    threads = [threading.Thread(target=start) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(found) == 8 and len(set(found)) == 1
    assert os.listdir(tmp_path / "fresh") == ["signing.key"]


def test_callrec_signing_key_is_honoured(tmp_path: Path) -> None:
    key = SigningKey.generate()
    from_pem = signing_key(Settings(data_dir=tmp_path, signing_key=key.to_pem()))
    assert from_pem.public.fingerprint == key.public.fingerprint
    raw = parse_signing_key(key.to_pem())
    assert raw.public.raw == key.public.raw
    import base64

    from cryptography.hazmat.primitives import serialization

    private = serialization.load_pem_private_key(key.to_pem().encode(), password=None)
    raw_bytes = private.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    from_b64 = signing_key(
        Settings(data_dir=tmp_path, signing_key=base64.b64encode(raw_bytes).decode())
    )
    assert from_b64.public.fingerprint == key.public.fingerprint
    assert not (tmp_path / "signing.key").exists()  # nothing generated when it is set
    for bad in ("bm90IGEga2V5", "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----"):
        with pytest.raises(ConfigError, match="signing key"):
            signing_key(Settings(data_dir=tmp_path, signing_key=bad))


def test_packs_and_the_signing_key_over_http(
    client: TestClient, backend: StorageBackend, clock: Clock, tmp_path: Path
) -> None:
    ids = _activity(client, tmp_path)
    compliance = {
        "Authorization": "Bearer "
        + _ok(client.post("/v1/api-keys", json={"role": "compliance"}, headers=ADMIN))["key"]
    }
    published = _ok(client.get("/v1/evidence/signing-key", headers=compliance))
    assert published["algorithm"] == "Ed25519"
    key = parse_public_key(published["public_key_pem"])
    assert parse_public_key(published["public_key"]).fingerprint == key.fingerprint
    assert published["fingerprint"] == key.fingerprint
    # The gateway's key is the one under its data dir: made once, the same for the CLI.
    assert signing_key(backend.settings).public.fingerprint == key.fingerprint

    body = {"client_id": "acme", "from": "2026-11-28", "to": "2026-11-29T00:00:00Z"}
    response = client.post("/v1/evidence/packs", json=body, headers=compliance)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/zip"
    assert response.headers["content-disposition"] == (
        'attachment; filename="evidence-acme-20261128T000000Z-20261129T000000Z.zip"'
    )
    check = check_pack(response.content, expected=key)
    assert check.ok, check.problems
    assert check.parameters["from"] == "2026-11-28T00:00:00.000000Z"
    members = _members(response.content)
    assert [c["recording_id"] for c in json.loads(members["deletion-certificates.json"])] == [
        ids["erased"]
    ]

    everyone = client.post("/v1/evidence/packs", json={**body, "client_id": None}, headers=ADMIN)
    assert everyone.status_code == 200
    assert 'filename="evidence-all-' in everyone.headers["content-disposition"]
    assert check_pack(everyone.content, expected=key).ok

    acme_admin = _ok(
        client.post("/v1/clients/acme/api-keys", json={"role": "client_admin"}, headers=ADMIN)
    )
    for headers, status in (({"Authorization": f"Bearer {acme_admin['key']}"}, 403), ({}, 401)):
        assert client.post("/v1/evidence/packs", json=body, headers=headers).status_code == status
        assert client.get("/v1/evidence/signing-key", headers=headers).status_code == status
    for bad, status, code in (
        ({**body, "client_id": "nobody"}, 404, "not_found"),
        ({**body, "to": "2026-11-28"}, 422, "invalid_request"),
        ({"from": "yesterday", "to": "2026-11-29"}, 422, None),
        ({**body, "extra": 1}, 422, None),
    ):
        refused = client.post("/v1/evidence/packs", json=bad, headers=compliance)
        assert refused.status_code == status, (bad, refused.text)
        assert set(refused.json()) == {"error", "detail"}
        if code is not None:
            assert refused.json()["error"] == code
