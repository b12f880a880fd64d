"""HTTP routes of evidence packs, for compliance: a signed pack, and the key that signs them."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, field_validator

from consent.api_auth import allow
from consent.api_context import Context
from consent.apikeys import Principal, Role
from retention.evidence_pack import build_pack, pack_filename
from storage.signing import SigningKey

router = APIRouter(prefix="/v1/evidence", tags=["evidence"])

Compliance = Annotated[Principal, Depends(allow(Role.COMPLIANCE))]


def get_signing_key(request: Request) -> SigningKey:
    key: SigningKey = request.app.state.signing_key
    return key


Signer = Annotated[SigningKey, Depends(get_signing_key)]


class PackRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    client_id: str | None = Field(None, max_length=63, description="The client; none: every client")
    start: datetime = Field(
        alias="from", description="Start of the period, included (a date alone: midnight UTC)"
    )
    end: datetime = Field(alias="to", description="End of the period, excluded")

    @field_validator("start", "end")
    @classmethod
    def _utc_unless_zoned(cls, value: datetime) -> datetime:
        return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


class SigningKeyPublic(BaseModel):
    model_config = ConfigDict(use_attribute_docstrings=True)

    algorithm: str
    """Always `Ed25519`."""
    public_key_pem: str
    """The public key as PEM (SubjectPublicKeyInfo), as `public-key.pem` in a pack."""
    public_key: str
    """The raw 32-byte public key, base64."""
    fingerprint: str
    """`SHA256:` and the hex SHA-256 of the raw key, as a pack's manifest names it."""


@router.post(
    "/packs",
    response_class=Response,
    responses={200: {"content": {"application/zip": {}}, "description": "The signed pack."}},
)
def make_pack(body: PackRequest, context: Context, key: Signer, principal: Compliance) -> Response:
    """A signed evidence pack (zip) for a client, or all, over `[from, to)`."""
    with context.read() as session:
        data = build_pack(
            session,
            client_id=body.client_id,
            start=body.start,
            end=body.end,
            audit=context.audit,
            key=key,
            now=context.clock(),
        )
    filename = pack_filename(body.client_id, body.start, body.end)
    return Response(
        data,
        media_type="application/zip",
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )


@router.get("/signing-key")
def get_signing_key_public(key: Signer, principal: Compliance) -> SigningKeyPublic:
    """The public key that signs evidence packs: PEM, raw base64 and fingerprint."""
    return SigningKeyPublic(
        algorithm="Ed25519",
        public_key_pem=key.public.pem,
        public_key=key.public.base64,
        fingerprint=key.public.fingerprint,
    )
