"""What every ``callrec`` command shares: consoles, settings, the clock, the database."""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, NoReturn

from pydantic import ValidationError
from rich.console import Console

from storage.settings import Settings, load_settings

if TYPE_CHECKING:
    from sqlalchemy.engine import Engine

    from storage.audit import AuditLog
    from storage.keyring import Keyring

CLI_ACTOR = "cli"

# Piped output (scripts, logs) gets room for full ids instead of an 80-column cut.
out = Console(width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, width=None if sys.stderr.isatty() else 200)


def cli_settings() -> Settings:
    """The settings, with logging set up as they say."""
    loaded = load_settings()
    logging.basicConfig(
        level=loaded.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return loaded


def utc_now() -> datetime:
    return datetime.now(UTC)


@dataclass
class Database:
    """The database side of callrec, for commands that need no S3."""

    engine: Engine
    keyring: Keyring
    audit: AuditLog


def open_database(settings: Settings) -> Database:
    import consent.models  # noqa: F401  (every table known, so foreign keys resolve)
    import retention.models  # noqa: F401
    from storage.audit import AuditLog
    from storage.backend import StorageBackend
    from storage.db import check_database, create_db_engine
    from storage.db import migrate as apply_migrations
    from storage.keyring import Keyring

    engine = closed_with_command(create_db_engine(settings.resolved_database_url))
    check_database(engine)
    apply_migrations(engine)
    keyring = Keyring(StorageBackend(settings).master_key())
    return Database(engine, keyring, AuditLog(keyring.derive("audit-anchor")))


# Engines the running command opened; closed when it ends (``release_engines``), so a
# command run inside a process that goes on (as tests run them) leaves no connection.
_ENGINES: list[Engine] = []


def closed_with_command(engine: Engine) -> Engine:
    _ENGINES.append(engine)
    return engine


def release_engines() -> None:
    while _ENGINES:
        _ENGINES.pop().dispose()


def print_json(data: Any) -> None:
    out.print_json(json.dumps(data, default=str))


def fail_on_invalid(exc: ValidationError) -> NoReturn:
    from consent.errors import InvalidRequest

    problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    raise InvalidRequest(problems) from None
