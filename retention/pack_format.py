"""An evidence pack's archive: files, a manifest of their hashes, its Ed25519 signature.

A pack is a zip whose members are, in this order: ``manifest.json``, ``manifest.sig``
(the raw 64-byte Ed25519 signature of ``manifest.json``'s bytes), ``public-key.pem`` (the
signing key's public half), then the content files by name. The manifest lists every
content file with its SHA-256 and size, the pack's parameters, its creation time, the
signing key's fingerprint and the audit chain's anchors around the period. Entries carry
the creation time and fixed attributes, so the same content makes the same bytes.

``check_pack`` needs nothing but the archive (and, to know *who* signed it, the key
expected): it checks the signature, every file, that no file is missing or extra, and
the audit events' chain from the anchor before the period to the anchor after it, with
the audit log's own hashing rules (``storage.audit.event_hash``). It names every problem
it finds, not only the first.
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from storage.audit import GENESIS_HASH, event_hash
from storage.errors import ConfigError
from storage.signing import PublicKey, SigningKey, parse_public_key

FORMAT = "callrec-evidence-pack/1"
MANIFEST, SIGNATURE, PUBLIC_KEY = "manifest.json", "manifest.sig", "public-key.pem"
EVENTS = "audit/events.jsonl"
_META = (MANIFEST, SIGNATURE, PUBLIC_KEY)
# A member larger than this is not read (a pack is JSON and HTML; this bounds a zip bomb).
MAX_MEMBER_BYTES = 2 * 1024**3


def timestamp(value: datetime) -> str:
    """UTC to the microsecond, as the audit log writes times."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def json_bytes(value: Any) -> bytes:
    """Stable JSON: sorted keys, two-space indent, a final newline."""
    return (json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()


@dataclass(frozen=True)
class Anchor:
    """An event's place in the chain: sequence number and hash (0 and zeros: the start)."""

    seq: int
    hash: str

    def as_json(self) -> dict[str, Any]:
        return {"seq": self.seq, "hash": self.hash}


START = Anchor(0, GENESIS_HASH)


def write_pack(
    files: Mapping[str, bytes],
    *,
    parameters: Mapping[str, Any],
    audit: Mapping[str, Any],
    key: SigningKey,
    created_at: datetime,
) -> bytes:
    """The signed archive of ``files`` (name → bytes)."""
    for name in files:
        if name in _META or name.startswith("/") or ".." in name.split("/"):
            raise ValueError(f"{name!r} cannot be a pack member's name")
    manifest = {
        "format": FORMAT,
        "created_at": timestamp(created_at),
        "parameters": dict(parameters),
        "signing_key": {
            "algorithm": "Ed25519",
            "fingerprint": key.public.fingerprint,
            "public_key": key.public.base64,
        },
        "audit": dict(audit),
        "files": [
            {"path": name, "sha256": hashlib.sha256(body).hexdigest(), "size": len(body)}
            for name, body in sorted(files.items())
        ],
    }
    manifest_bytes = json_bytes(manifest)
    members = [
        (MANIFEST, manifest_bytes),
        (SIGNATURE, key.sign(manifest_bytes)),
        (PUBLIC_KEY, key.public.pem.encode()),
        *sorted(files.items()),
    ]
    when = created_at.astimezone(UTC)
    stamp = (max(when.year, 1980), when.month, when.day, when.hour, when.minute, when.second)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, body in members:
            info = zipfile.ZipInfo(name, date_time=stamp)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, body)
    return buffer.getvalue()


@dataclass
class PackCheck:
    """What ``check_pack`` found; ``ok`` when ``problems`` is empty."""

    problems: list[str] = field(default_factory=list)
    signed_by: str | None = None
    expected_key: str | None = None
    parameters: dict[str, Any] = field(default_factory=dict)
    created_at: str | None = None
    files: int = 0
    events: int = 0
    withheld: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems


def check_pack(data: bytes, *, expected: PublicKey | None = None) -> PackCheck:
    """Check an archive made by ``write_pack``; every problem found is named."""
    check = PackCheck(expected_key=expected.fingerprint if expected else None)
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        check.problems.append(f"not a readable zip archive ({exc})")
        return check
    with archive:
        members = _read_members(archive, check)
    missing_meta = [name for name in _META if name not in members]
    for name in missing_meta:
        check.problems.append(f"file {name} removed")
    if missing_meta:
        return check
    manifest = _signed_manifest(members, check, expected)
    if manifest is None:
        return check
    listed = _check_files(members, manifest, check)
    if EVENTS in listed and EVENTS in members:
        _check_chain(members[EVENTS], manifest.get("audit", {}), check)
    return check


def _read_members(archive: zipfile.ZipFile, check: PackCheck) -> dict[str, bytes]:
    members: dict[str, bytes] = {}
    for info in archive.infolist():
        if info.filename in members:
            check.problems.append(f"file {info.filename} appears twice")
            continue
        if info.file_size > MAX_MEMBER_BYTES:
            check.problems.append(f"file {info.filename} is too large to check")
            continue
        try:
            members[info.filename] = archive.read(info)
        except (zipfile.BadZipFile, OSError) as exc:  # a CRC error: bytes changed in place
            check.problems.append(f"file {info.filename} is damaged in the archive ({exc})")
    return members


def _signed_manifest(
    members: dict[str, bytes], check: PackCheck, expected: PublicKey | None
) -> dict[str, Any] | None:
    """The manifest, once its signature is checked; None if nothing more can be trusted."""
    try:
        key = parse_public_key(members[PUBLIC_KEY].decode("ascii", "replace"))
    except ConfigError as exc:
        check.problems.append(f"file {PUBLIC_KEY} holds no usable key ({exc})")
        return None
    check.signed_by = key.fingerprint
    if expected is not None and key.fingerprint != expected.fingerprint:
        check.problems.append(
            f"signed by key {key.fingerprint}, not by the expected key {expected.fingerprint}"
        )
    if not key.verify(members[SIGNATURE], members[MANIFEST]):
        check.problems.append(
            f"bad signature: {MANIFEST} is not what key {key.fingerprint} signed "
            "(the manifest was changed after signing, or the signature replaced)"
        )
    try:
        manifest = json.loads(members[MANIFEST])
    except ValueError:
        check.problems.append(f"file {MANIFEST} is not JSON")
        return None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        check.problems.append(f"file {MANIFEST} is not a {FORMAT} manifest")
        return None
    named = manifest.get("signing_key", {}).get("fingerprint")
    if named != key.fingerprint:
        check.problems.append(
            f"the manifest names signing key {named}, but {PUBLIC_KEY} is {key.fingerprint}"
        )
    check.parameters = dict(manifest.get("parameters", {}))
    check.created_at = manifest.get("created_at")
    return manifest


def _check_files(members: dict[str, bytes], manifest: dict[str, Any], check: PackCheck) -> set[str]:
    listed: set[str] = set()
    for entry in manifest.get("files", []):
        name = str(entry.get("path"))
        listed.add(name)
        body = members.get(name)
        if body is None:
            check.problems.append(f"file {name} removed")
        elif hashlib.sha256(body).hexdigest() != entry.get("sha256"):
            check.problems.append(f"file {name} changed (its SHA-256 is not the manifest's)")
        elif len(body) != entry.get("size"):
            check.problems.append(f"file {name} changed (its size is not the manifest's)")
    for name in sorted(set(members) - listed - set(_META)):
        check.problems.append(f"extra file {name} (not in the manifest)")
    check.files = len(listed)
    return listed


def _check_chain(body: bytes, audit: Mapping[str, Any], check: PackCheck) -> None:
    """Walk the events from the anchor before the period; end on the anchor after it."""
    try:
        before = Anchor(int(audit["anchor_before"]["seq"]), str(audit["anchor_before"]["hash"]))
        after = Anchor(int(audit["anchor_after"]["seq"]), str(audit["anchor_after"]["hash"]))
    except (KeyError, TypeError, ValueError):
        check.problems.append(f"the manifest has no audit anchors for {EVENTS}")
        return
    seq, prev = before.seq, before.hash
    lines = body.decode("utf-8", "replace").splitlines()
    for position, line in enumerate(lines, start=1):
        where = f"audit event at position {position} of {EVENTS}"
        try:
            event = json.loads(line)
            found_seq = int(event["seq"])
        except (ValueError, KeyError, TypeError):
            check.problems.append(f"{where} is not an event")
            return
        if found_seq != seq + 1:
            check.problems.append(
                f"{where} is event {found_seq}, expected event {seq + 1} "
                "(events swapped, removed or inserted)"
            )
            return
        if event.get("prev_hash") != prev:
            check.problems.append(f"{where} (event {found_seq}) does not follow the one before it")
            return
        if event.get("withheld"):
            check.withheld += 1
        elif _rehash(event) != event.get("hash"):
            check.problems.append(f"{where} (event {found_seq}) was edited: its hash fails")
            return
        seq, prev = found_seq, str(event.get("hash"))
        check.events += 1
    if (seq, prev) != (after.seq, after.hash):
        check.problems.append(
            f"{EVENTS} ends at event {seq}, but the chain's anchor after the period is "
            f"event {after.seq} (events removed or added at the end)"
        )


def _rehash(event: Mapping[str, Any]) -> str | None:
    try:
        fields = {
            "seq": event["seq"],
            "at": datetime.fromisoformat(event["at"]),
            "kind": event["kind"],
            "actor": event["actor"],
            "client_id": event["client_id"],
            "subject": event["subject"],
            "data": json.dumps(event["data"]),
        }
        return event_hash(str(event["prev_hash"]), fields)
    except (KeyError, TypeError, ValueError):
        return None
