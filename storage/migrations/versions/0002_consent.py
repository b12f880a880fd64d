"""Consent: clients, API keys, ledger, registry (purposes, rules), objections, decisions.

Revision ID: 0002
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from storage.types import UTCDateTime

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:

    op.create_table(
        "call_decisions",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=63), nullable=False),
        sa.Column("call_id", sa.String(length=200), nullable=False),
        sa.Column("channel", sa.String(length=20), nullable=False),
        sa.Column("direction", sa.String(length=20), nullable=False),
        sa.Column("participants", sa.Text(), nullable=False),
        sa.Column("jurisdiction", sa.String(length=10), nullable=True),
        sa.Column("record", sa.Boolean(), nullable=False),
        sa.Column("reason", sa.String(length=40), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=True),
        sa.Column("grant_version", sa.Integer(), nullable=True),
        sa.Column("rule", sa.String(length=20), nullable=False),
        sa.Column("rule_jurisdiction", sa.String(length=10), nullable=True),
        sa.Column("rule_version", sa.Integer(), nullable=True),
        sa.Column("announcement_required", sa.Boolean(), nullable=False),
        sa.Column("awaiting_caller_consent", sa.Boolean(), nullable=False),
        sa.Column("caller_answer", sa.String(length=20), nullable=True),
        sa.Column("caller_method", sa.String(length=20), nullable=True),
        sa.Column("caller_notice_version", sa.String(length=100), nullable=True),
        sa.Column("caller_answered_at", UTCDateTime(), nullable=True),
        sa.Column("state", sa.String(length=20), nullable=False),
        sa.Column("decided_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "call_id"),
    )
    with op.batch_alter_table("call_decisions", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_call_decisions_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_call_decisions_reason"), ["reason"], unique=False)

    op.create_table(
        "clients",
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("country", sa.String(length=2), nullable=False),
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("offboarded_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "jurisdiction_rules",
        sa.Column("jurisdiction", sa.String(length=10), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("rule", sa.String(length=20), nullable=False),
        sa.Column("reference", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("jurisdiction", "version"),
    )
    op.create_table(
        "purposes",
        sa.Column("name", sa.String(length=40), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("legal_basis", sa.String(length=200), nullable=False),
        sa.Column("regulator_reference", sa.String(length=200), nullable=True),
        sa.Column("default_retention_days", sa.Integer(), nullable=False),
        sa.Column("max_retention_days", sa.Integer(), nullable=False),
        sa.Column("storage_countries", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("role", sa.String(length=20), nullable=False),
        sa.Column("client_id", sa.String(length=63), nullable=True),
        sa.Column("secret_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_api_keys_client_id"), ["client_id"], unique=False)

    op.create_table(
        "consent_events",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("client_id", sa.String(length=63), nullable=False),
        sa.Column("grant_id", sa.String(length=40), nullable=False),
        sa.Column("kind", sa.String(length=10), nullable=False),
        sa.Column("ledger_version", sa.Integer(), nullable=False),
        sa.Column("purposes", sa.Text(), nullable=False),
        sa.Column("directions", sa.Text(), nullable=False),
        sa.Column("channels", sa.Text(), nullable=False),
        sa.Column("notice", sa.String(length=20), nullable=True),
        sa.Column("notice_version", sa.String(length=100), nullable=True),
        sa.Column("notice_sha256", sa.String(length=64), nullable=True),
        sa.Column("valid_from", UTCDateTime(), nullable=True),
        sa.Column("valid_until", UTCDateTime(), nullable=True),
        sa.Column("granted_by", sa.String(length=200), nullable=True),
        sa.Column("evidence", sa.Text(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("purge_existing", sa.Boolean(), nullable=False),
        sa.Column("actor", sa.String(length=100), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("client_id", "ledger_version"),
    )
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.create_index(
            batch_op.f("ix_consent_events_client_id"), ["client_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_consent_events_grant_id"), ["grant_id"], unique=False)

    op.create_table(
        "objections",
        sa.Column("client_id", sa.String(length=63), nullable=False),
        sa.Column("phone_hash", sa.String(length=64), nullable=False),
        sa.Column("source", sa.String(length=100), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
        ),
        sa.PrimaryKeyConstraint("client_id", "phone_hash"),
    )
    op.create_table(
        "retention_overrides",
        sa.Column("client_id", sa.String(length=63), nullable=False),
        sa.Column("purpose", sa.String(length=40), nullable=False),
        sa.Column("days", sa.Integer(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["clients.id"],
        ),
        sa.ForeignKeyConstraint(
            ["purpose"],
            ["purposes.name"],
        ),
        sa.PrimaryKeyConstraint("client_id", "purpose"),
    )

    _seed()


def downgrade() -> None:

    op.drop_table("retention_overrides")
    op.drop_table("objections")
    with op.batch_alter_table("consent_events", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_consent_events_grant_id"))
        batch_op.drop_index(batch_op.f("ix_consent_events_client_id"))

    op.drop_table("consent_events")
    with op.batch_alter_table("api_keys", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_api_keys_client_id"))

    op.drop_table("api_keys")
    op.drop_table("purposes")
    op.drop_table("jurisdiction_rules")
    op.drop_table("clients")
    with op.batch_alter_table("call_decisions", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_call_decisions_reason"))
        batch_op.drop_index(batch_op.f("ix_call_decisions_client_id"))

    op.drop_table("call_decisions")


# Reference data as of this revision; later changes come as new versions in new
# migrations, never as edits here (decisions cite the version that fired).
_PURPOSES = [
    ("research", "Research on anonymised conversation patterns", 365, 730),
    ("improvement", "Improving the client's service quality (agent coaching, QA)", 180, 365),
    ("optimization", "Optimising the voice system (routing, speech models)", 90, 180),
]

_ALL = "all_party"
_ONE = "one_party"
_RULES = [
    ("MA", _ALL, "Penal Code art. 447-1; Law 09-08 on personal data protection"),
    ("US-CA", _ALL, "Cal. Penal Code §§ 632, 632.7"),
    ("US-FL", _ALL, "Fla. Stat. § 934.03"),
    ("US-IL", _ALL, "720 ILCS 5/14-2"),
    ("US-MD", _ALL, "Md. Code, Cts. & Jud. Proc. § 10-402"),
    ("US-MA", _ALL, "Mass. Gen. Laws ch. 272, § 99"),
    ("US-MT", _ALL, "Mont. Code Ann. § 45-8-213"),
    ("US-NV", _ALL, "Nev. Rev. Stat. § 200.620"),
    ("US-NH", _ALL, "N.H. Rev. Stat. § 570-A:2"),
    ("US-PA", _ALL, "18 Pa. Cons. Stat. § 5703"),
    ("US-WA", _ALL, "Rev. Code Wash. § 9.73.030"),
    ("FR", _ALL, "Code pénal art. 226-1"),
    ("DE", _ALL, "StGB § 201 (confidentiality of the spoken word)"),
    ("US-NY", _ONE, "N.Y. Penal Law §§ 250.00, 250.05"),
    ("US-TX", _ONE, "Tex. Penal Code § 16.02(c)(4)"),
    ("US-NJ", _ONE, "N.J. Stat. § 2A:156A-4(d)"),
    ("US-GA", _ONE, "Ga. Code § 16-11-66(a)"),
    ("GB", _ONE, "Investigatory Powers Act 2016 s. 3; SI 2018/356 (business recording)"),
]


def _seed() -> None:
    purposes = sa.table(
        "purposes",
        sa.column("name"),
        sa.column("description"),
        sa.column("legal_basis"),
        sa.column("regulator_reference"),
        sa.column("default_retention_days"),
        sa.column("max_retention_days"),
        sa.column("storage_countries"),
    )
    op.bulk_insert(
        purposes,
        [
            {
                "name": name,
                "description": description,
                "legal_basis": "consent of the client (Law 09-08 art. 4; GDPR art. 6(1)(a))",
                "regulator_reference": None,
                "default_retention_days": default_days,
                "max_retention_days": max_days,
                "storage_countries": "[]",
            }
            for name, description, default_days, max_days in _PURPOSES
        ],
    )
    rules = sa.table(
        "jurisdiction_rules",
        sa.column("jurisdiction"),
        sa.column("version"),
        sa.column("rule"),
        sa.column("reference"),
    )
    op.bulk_insert(
        rules,
        [
            {"jurisdiction": code, "version": 1, "rule": rule, "reference": reference}
            for code, rule, reference in _RULES
        ],
    )
