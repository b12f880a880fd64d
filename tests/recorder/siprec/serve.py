"""A real ``callrec serve`` for the third-party SIP clients: SIPREC on an ephemeral port.

The gateway runs as it does in production, in a process of its own, on the test
SeaweedFS and a SQLite catalog under the test's directory, its SIP server on a free
port of 127.0.0.1 and its RTP on a small range of its own (below the kernel's
ephemeral ports, so that no socket bound elsewhere to port 0 takes one). A client
``acme`` with a consent grant is set up over HTTP; with no SIPREC settings the client
takes INVITEs from loopback, which is where the tests send them from.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import httpx2 as httpx

from storage.embedded_s3 import EmbeddedS3
from tests.recorder.conftest import ADMIN, ADMIN_KEY, Tenant, make_tenant
from tests.recorder.test_store_path_kill import BOUND, Gateway, _free_port

if TYPE_CHECKING:
    from fastapi.testclient import TestClient

RTP_PORTS = 10  # a call takes one per stream


@dataclass
class SiprecGateway:
    gateway: Gateway
    sip_port: int
    rtp_first: int
    tenant: Tenant

    @property
    def url(self) -> str:
        return self.gateway.url

    def recordings(self) -> list[dict[str, Any]]:
        with httpx.Client(base_url=self.url, timeout=BOUND) as http:
            items: list[dict[str, Any]] = http.get(
                "/v1/recordings", headers=self.tenant.client_admin
            ).json()["items"]
        return items

    def stored(self, count: int = 1) -> list[dict[str, Any]]:
        """The client's recordings once ``count`` of them are stored (or failed)."""
        deadline = time.monotonic() + BOUND
        while True:
            items = self.recordings()
            if sum(1 for r in items if r["state"] in ("stored", "failed")) >= count:
                return items
            assert time.monotonic() < deadline, f"no stored recording in {BOUND} s: {items}"
            time.sleep(0.2)

    def audio(self, recording_id: str) -> bytes:
        with httpx.Client(base_url=self.url, timeout=BOUND) as http:
            answer = http.get(
                f"/v1/recordings/{recording_id}/audio", headers=self.tenant.client_admin
            )
            assert answer.status_code == 200, answer.text
            return answer.content

    def audit_kinds(self, call_id: str) -> list[str]:
        with httpx.Client(base_url=self.url, timeout=BOUND) as http:
            items = http.get("/v1/audit", params={"call_id": call_id}, headers=ADMIN).json()
        return [event["kind"] for event in items["items"]]


@contextmanager
def siprec_gateway(s3_server: EmbeddedS3, bucket: str, workdir: Path) -> Iterator[SiprecGateway]:
    cfg = s3_server.config(bucket)
    sip_port = _free_port()
    rtp_first = 20000 + secrets.randbelow(1000) * RTP_PORTS
    env = {k: v for k, v in os.environ.items() if not k.startswith("CALLREC_")}
    env |= {
        "CALLREC_DATA_DIR": str(workdir / "var"),
        "CALLREC_S3_ENDPOINT_URL": cfg.endpoint_url,
        "CALLREC_S3_ACCESS_KEY_ID": cfg.access_key_id,
        "CALLREC_S3_SECRET_ACCESS_KEY": cfg.secret_access_key,
        "CALLREC_S3_BUCKET": bucket,
        "CALLREC_MASTER_KEY": secrets.token_urlsafe(32)[:43] + "=",
        "CALLREC_ADMIN_KEY": ADMIN_KEY,
        "CALLREC_HTTP_PORT": str(_free_port()),
        "CALLREC_SIP_HOST": "127.0.0.1",
        "CALLREC_SIP_PORT": str(sip_port),
        "CALLREC_RTP_PORTS": f"{rtp_first}-{rtp_first + RTP_PORTS - 1}",
        "CALLREC_LOG_LEVEL": "INFO",
        "CALLREC_ICE_ADDRESSES": "127.0.0.1",
    }
    gateway = Gateway(env, int(env["CALLREC_HTTP_PORT"]), workdir / "serve.log")
    gateway.start()
    try:
        with httpx.Client(base_url=gateway.url, timeout=BOUND) as http:
            tenant = make_tenant(cast("TestClient", http))
        yield SiprecGateway(gateway, sip_port, rtp_first, tenant)
    finally:
        gateway.stop()
