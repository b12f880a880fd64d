"""Start-up check that the S3 endpoint does what callrec relies on.

Purging a recording means deleting every version of its object and proving that
nothing is left, and the tags must always say what the catalog says. An endpoint that
silently ignores versioning, tagging or batch deletes would turn those promises into
lies, so callrec refuses to start on one (``BackendUnsupported``).
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Iterator
from contextlib import contextmanager

from storage.errors import (
    BackendUnsupported,
    ObjectStoreError,
    StoreAccessDenied,
    StoreUnavailable,
)
from storage.objectstore import ObjectStore

log = logging.getLogger(__name__)

PROBE_PREFIX = "_callrec/probe/"


@contextmanager
def _capability(name: str) -> Iterator[None]:
    """Report a failing step as the missing capability; outages and refusals pass through."""
    try:
        yield
    except (StoreAccessDenied, StoreUnavailable, BackendUnsupported):
        raise
    except ObjectStoreError as exc:
        raise BackendUnsupported(f"{name}: {exc}") from exc


def _require(ok: bool, name: str, detail: str) -> None:
    if not ok:
        raise BackendUnsupported(f"{name}: {detail}")


def check_backend(store: ObjectStore, *, probe_id: str | None = None) -> None:
    """Raise BackendUnsupported, naming the capability, unless the bucket does it all.

    Checked: versioning enabled, tags at upload, tag replacement, one version per
    overwrite, batch delete of versions, delete markers, and a delete of every version
    that leaves nothing. The probe object lives under ``_callrec/probe/`` and is removed.
    """
    status = store.versioning_status()
    _require(
        status == "Enabled",
        "bucket versioning",
        f"bucket {store.bucket!r} has versioning {status or 'never enabled'}, not Enabled",
    )
    key = PROBE_PREFIX + (probe_id or secrets.token_hex(8))
    try:
        _probe(store, key)
    finally:
        _clean_up(store, key)
    log.info("S3 backend check passed on bucket %s", store.bucket)


def _probe(store: ObjectStore, key: str) -> None:
    first_tags = {"callrec-probe": "1", "purpose:research": "2000-01-01"}
    with _capability("object tagging at upload"):
        first = store.put_bytes(key, b"callrec probe 1", tags=first_tags)
        got = store.get_tags(key)
    _require(got == first_tags, "object tagging at upload", f"sent {first_tags}, read {got}")

    with _capability("tag replacement"):
        store.put_tags(key, {"callrec-probe": "2"})
        got = store.get_tags(key)
    _require(got == {"callrec-probe": "2"}, "tag replacement", f"read {got} after replacing")

    with _capability("object versioning"):
        second = store.put_bytes(key, b"callrec probe 2", tags={})
        versions = [r for r in store.list_versions(key) if not r.is_delete_marker]
        ids = {r.version_id for r in versions}
    _require(
        first.version_id is not None
        and second.version_id is not None
        and {first.version_id, second.version_id} <= ids
        and len(ids) == 2,
        "object versioning",
        f"two uploads of one key left versions {sorted(ids)}",
    )
    assert first.version_id is not None  # narrowed by the check above
    with _capability("reading an older version"):
        old = b"".join(store.get_stream(key, version_id=first.version_id))
    _require(old == b"callrec probe 1", "reading an older version", "wrong bytes returned")

    with _capability("batch delete of versions"):
        oldest = next(r for r in versions if r.version_id == first.version_id)
        failed = store.delete_versions([oldest])
        left = {r.version_id for r in store.list_versions(key)}
    _require(
        not failed and first.version_id not in left,
        "batch delete of versions",
        f"version {first.version_id} still listed after DeleteObjects",
    )

    with _capability("delete markers"):
        marker = store.delete(key)
        markers = [r for r in store.list_versions(key) if r.is_delete_marker]
    _require(
        marker is not None and len(markers) == 1,
        "delete markers",
        f"a plain delete left {len(markers)} delete markers",
    )

    with _capability("deleting every version"):
        report = store.delete_all_versions(key)
    _require(
        report.gone and report.versions_removed == 2,
        "deleting every version",
        f"removed {report.versions_removed} of 2 (version + marker), gone={report.gone}",
    )


def _clean_up(store: ObjectStore, key: str) -> None:
    """Remove whatever the probe left; never hide the error that brought us here."""
    try:
        if store.list_versions(key):
            store.delete_all_versions(key)
    except ObjectStoreError as exc:
        log.warning("could not remove the S3 probe object %s: %s", key, exc)
