"""The boto3 S3 client underneath the object store: how it is built, and how its errors
become storage errors.

Every botocore error is translated in ``translate`` into the storage exception tree,
so callers never see a boto type. Only the object store's modules use boto3.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as BotoConnectionError

from storage.errors import ObjectNotFound, ObjectStoreError, StoreAccessDenied, StoreUnavailable

if TYPE_CHECKING:
    from botocore.config import _S3Dict
    from mypy_boto3_s3 import S3Client

ACCESS_CODES = {"AccessDenied", "SignatureDoesNotMatch", "InvalidAccessKeyId", "403"}
_MISSING_CODES = {"NoSuchKey", "NoSuchVersion", "NoSuchBucket", "NotFound", "404"}


@dataclass(frozen=True)
class S3Config:
    """Where and as whom to reach S3; ``endpoint_url`` None means AWS itself."""

    endpoint_url: str | None
    access_key_id: str
    secret_access_key: str
    bucket: str
    region: str = "us-east-1"
    # SigV4 hashes every request body over plain HTTP. Only a link nobody can alter
    # (the embedded S3's loopback) goes without: there it costs both ends a SHA-256 of
    # every byte for nothing. None leaves the choice to botocore.
    sign_payload: bool | None = None


@contextmanager
def translate(action: str, key: str = "") -> Iterator[None]:
    """Turn botocore errors into storage errors; the one place that does."""
    what = f"{action} {key}".rstrip()
    try:
        yield
    except ClientError as exc:
        err = exc.response.get("Error", {})
        code = str(err.get("Code", "?"))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        text = f"{what}: {code} {err.get('Message', '')}".rstrip()
        if code in _MISSING_CODES or status == 404:
            raise ObjectNotFound(text) from exc
        if code in ACCESS_CODES or status == 403:
            raise StoreAccessDenied(
                f"S3 refused {text} (wrong credentials or no permission)"
            ) from exc
        if status == 503:
            raise StoreUnavailable(f"S3 unavailable on {text}") from exc
        raise ObjectStoreError(text) from exc
    except (BotoConnectionError, HTTPClientError) as exc:  # refused, timed out, dropped
        raise StoreUnavailable(f"S3 unreachable on {what}: {exc}") from exc
    except BotoCoreError as exc:
        raise ObjectStoreError(f"{what}: {exc}") from exc


def _s3_options(cfg: S3Config) -> _S3Dict:
    options: _S3Dict = {"addressing_style": "path"}
    if cfg.sign_payload is not None:
        options["payload_signing_enabled"] = cfg.sign_payload
    return options


class RequestErrors:
    """S3 requests of one client that failed, by error code."""

    def __init__(self, client: S3Client) -> None:
        self._errors: Counter[str] = Counter()
        self._errors_lock = threading.Lock()
        # Counted per request once botocore is done retrying, by S3 error code or by
        # exception (refused, timed out); a 404 is an answer, not an error.
        events = client.meta.events
        events.register("after-call.s3", self._count_answer)
        events.register("after-call-error.s3", self._count_failure)

    def counts(self) -> dict[str, int]:
        """The failures counted so far."""
        with self._errors_lock:
            return dict(self._errors)

    def _count_answer(self, http_response: Any = None, parsed: Any = None, **_: Any) -> None:
        status = getattr(http_response, "status_code", 200)
        if status >= 400 and status != 404:
            code = (parsed or {}).get("Error", {}).get("Code") or str(status)
            with self._errors_lock:
                self._errors[str(code)] += 1

    def _count_failure(self, exception: BaseException | None = None, **_: Any) -> None:
        with self._errors_lock:
            self._errors[type(exception).__name__] += 1


def make_client(
    cfg: S3Config,
    *,
    max_pool_connections: int,
    connect_timeout: float,
    read_timeout: float,
    max_attempts: int,
) -> S3Client:
    """A client: path-style, bounded timeouts and retries so outages fail fast."""
    config = Config(
        region_name=cfg.region,
        signature_version="s3v4",
        s3=_s3_options(cfg),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        retries={"mode": "standard", "total_max_attempts": max_attempts},
        max_pool_connections=max_pool_connections,
        # Checksums only where S3 demands them: several S3-compatible stores reject
        # the default streaming trailers.
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
    )
    # A session of our own: the default one is shared global state.
    session = boto3.session.Session()
    return session.client(
        "s3",
        endpoint_url=cfg.endpoint_url,
        # Empty credentials fall through to the default chain (instance roles, env).
        aws_access_key_id=cfg.access_key_id or None,
        aws_secret_access_key=cfg.secret_access_key or None,
        config=config,
    )
