"""Every table of the storage layer, imported in one place for migrations and tests."""

from storage.audit import AuditAnchor, AuditEvent
from storage.catalog import Recording, RecordingPurpose
from storage.keyring import ClientKey, MasterKeyCheck, RecordingKey
from storage.outbox import WebhookDelivery
from storage.webhook_fanout import WebhookFanoutCursor
from storage.webhooks import WebhookEndpoint

__all__ = [
    "AuditAnchor",
    "AuditEvent",
    "ClientKey",
    "MasterKeyCheck",
    "Recording",
    "RecordingKey",
    "RecordingPurpose",
    "WebhookDelivery",
    "WebhookEndpoint",
    "WebhookFanoutCursor",
]
