"""callrec's configuration: the one module that reads the environment.

Every setting is an environment variable prefixed ``CALLREC_``; the README lists them
all with their defaults. Nothing here connects to anything: the settings are read
once by the entry point (CLI or app factory) and passed down as arguments.
"""

from __future__ import annotations

import ipaddress
from itertools import pairwise
from pathlib import Path

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from storage.errors import ConfigError

MIB = 1024 * 1024

# Secrets that ship in examples; a deployment that keeps one of them is refused.
_PLACEHOLDER_SECRETS = {"changeme", "change-me", "changethis", "secret", "password", "admin"}


# Distinct characters below which a key is guessable: a random 16-character hex key
# has fewer than this about twice in 100,000 draws.
_MIN_DISTINCT = 6


def _guessable(key: str) -> bool:
    """True for keys a person types rather than generates: few characters, or a run."""
    steps = {ord(b) - ord(a) for a, b in pairwise(key)}
    return len(set(key)) < _MIN_DISTINCT or steps <= {1} or steps <= {-1}


def _port_range(value: str) -> tuple[int, int]:
    """``"40000-40999"`` as (40000, 40999); ValueError unless 1024 <= first <= last <= 65535."""
    first, dash, last = (part.strip() for part in value.partition("-"))
    if not dash or not first.isdigit() or not last.isdigit():
        raise ValueError(f"{value!r}: a range FIRST-LAST, e.g. 40000-40999")
    # Below 1024 a port needs privileges; each stream of a call takes one of the range.
    if not 1024 <= int(first) <= int(last) <= 65535:
        raise ValueError(f"{value!r}: FIRST <= LAST, both within 1024-65535")
    return int(first), int(last)


class Settings(BaseSettings):
    """callrec settings; each field is ``CALLREC_<FIELD>`` in the environment."""

    model_config = SettingsConfigDict(env_prefix="CALLREC_", extra="ignore", env_ignore_empty=True)

    data_dir: Path = Field(Path("./var"), description="Where embedded state lives.")
    database_url: str | None = Field(
        None, description="SQLAlchemy URL; default SQLite at DATA_DIR/callrec.db."
    )
    s3_endpoint_url: str | None = Field(
        None, description="S3 endpoint; unset starts the embedded SeaweedFS."
    )
    s3_access_key_id: str | None = Field(
        None, description="S3 access key; generated under DATA_DIR for the embedded S3."
    )
    s3_secret_access_key: SecretStr | None = Field(None, description="S3 secret key.")
    s3_region: str = Field("us-east-1", description="S3 region name.")
    s3_bucket: str = Field("callrec-recordings", description="Bucket holding recordings.")
    s3_part_size: int = Field(8 * MIB, ge=5 * MIB, description="Multipart part size, bytes.")
    s3_concurrency: int = Field(4, ge=1, le=32, description="Parts uploaded in parallel.")
    master_key: SecretStr | None = Field(
        None, description="Base64 32-byte master key; generated under DATA_DIR if unset."
    )
    admin_key: SecretStr | None = Field(None, description="Bootstrap admin API key.")
    signing_key: SecretStr | None = Field(
        None,
        description="Ed25519 private key signing evidence packs (PKCS#8 PEM, or the raw "
        "32 bytes in base64); generated under DATA_DIR if unset.",
    )
    upload_max_bytes: int = Field(
        512 * MIB, ge=1024, description="Largest upload accepted, bytes (413 beyond)."
    )
    upload_max_duration_s: int = Field(
        4 * 3600,
        ge=1,
        description="Longest upload accepted, in seconds of audio (413 beyond); bounds "
        "the work one upload can cause, however well it compresses.",
    )
    purge_interval_s: int = Field(
        3600, ge=10, description="Seconds between purge sweeps in `callrec serve`."
    )
    purge_batch_size: int = Field(
        500, ge=1, le=1000, description="Recordings purged per transaction."
    )
    reconcile_interval_s: int = Field(
        86400,
        ge=60,
        description="Seconds between reconciliations (catalog against bucket) in `callrec serve`.",
    )
    reconcile_clean_after_s: int = Field(
        86400,
        ge=0,
        description="The scheduled reconciliation aborts unfinished uploads and deletes stray "
        "versions older than this many seconds; 0 only reports them.",
    )
    spool_retry_interval_s: int = Field(
        60, ge=5, description="Seconds between upload retries of recordings left in the spool."
    )
    http_host: str = Field("127.0.0.1", description="HTTP listen address.")
    http_port: int = Field(8080, ge=0, le=65535, description="HTTP listen port.")
    sip_host: str = Field(
        "127.0.0.1",
        description="SIPREC listen address, also the RTP address of the SDP answers: "
        "one the SRCs reach, never 0.0.0.0 or ::.",
    )
    sip_port: int = Field(5080, ge=0, le=65535, description="SIPREC listen port.")
    rtp_ports: str = Field(
        "40000-40999",
        description="SIPREC media ports, `FIRST-LAST` inclusive: one per received stream "
        "(read as a pair by `rtp_port_range`).",
    )
    log_level: str = Field("INFO", description="Python logging level.")
    ice_addresses: list[str] | None = Field(
        None,
        description="Comma-separated addresses of the ICE host candidates WHIP offers; "
        "default: the machine's addresses but loopback.",
    )
    live_max_sessions: int = Field(
        200, ge=1, description="Live sessions one gateway holds at once (503 beyond)."
    )
    live_max_duration_s: int = Field(
        4 * 3600, ge=60, description="Longest live capture, seconds; ended and stored then."
    )
    live_media_timeout_s: int = Field(
        30, ge=1, description="Seconds without media after which a live session is ended."
    )
    webhook_timeout_s: float = Field(
        5.0, gt=0, le=60, description="Seconds a webhook receiver has to answer one attempt."
    )
    webhook_max_age_s: int = Field(
        86400,
        ge=60,
        description="Seconds a webhook is retried (with backoff) before it is dead.",
    )
    webhook_concurrency: int = Field(
        64, ge=1, le=1024, description="Webhook deliveries one gateway sends at once."
    )

    @field_validator("ice_addresses", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("rtp_ports")
    @classmethod
    def _port_range(cls, value: str) -> str:
        first, last = _port_range(value)
        return f"{first}-{last}"

    @field_validator("sip_host")
    @classmethod
    def _sip_host_specified(cls, value: str) -> str:
        # The host is also the address of the SDP answer's c= line and of the Contact:
        # c=0.0.0.0 tells the SRC to hold (RFC 3264 §8.4), so a wildcard cannot serve.
        try:
            unspecified = ipaddress.ip_address(value.strip().strip("[]")).is_unspecified
        except ValueError:
            return value  # a host name, or an address that binds as given
        if unspecified:
            raise ValueError(
                f"{value!r} is no address an SRC can send to: it is also the RTP address "
                "of the SDP answers, where it means hold; set the address the SRCs reach "
                "this gateway at (e.g. 10.0.0.5)"
            )
        return value

    @field_validator("admin_key", "s3_secret_access_key", "master_key", "signing_key")
    @classmethod
    def _refuse_placeholders(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and value.get_secret_value().lower() in _PLACEHOLDER_SECRETS:
            raise ValueError("placeholder secret; set a real one")
        return value

    @field_validator("admin_key")
    @classmethod
    def _admin_key_long_enough(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return value
        key = value.get_secret_value()
        if len(key) < 16:
            raise ValueError("must be at least 16 characters")
        if _guessable(key):
            raise ValueError(
                "low entropy (too few distinct characters, or a run like abcd…); "
                "generate one, e.g. `openssl rand -hex 24`"
            )
        return value

    @property
    def rtp_port_range(self) -> tuple[int, int]:
        """``CALLREC_RTP_PORTS`` as (first, last), both included."""
        return _port_range(self.rtp_ports)

    @property
    def embedded_s3(self) -> bool:
        """True when callrec must start SeaweedFS itself."""
        return self.s3_endpoint_url is None

    @property
    def resolved_database_url(self) -> str:
        """The database URL, with the embedded SQLite default filled in."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'callrec.db').resolve()}"


def load_settings(**overrides: object) -> Settings:
    """Read the settings from the environment; ConfigError names what is wrong."""
    from pydantic import ValidationError

    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        problems = "; ".join(
            f"CALLREC_{'_'.join(str(p) for p in err['loc']).upper()}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(problems) from None
