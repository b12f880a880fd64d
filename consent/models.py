"""Every table of the consent layer, imported in one place for migrations and tests."""

from consent.apikeys import ApiKey
from consent.calls import CallDecision
from consent.clients import Client
from consent.ledger import ConsentEvent
from consent.objections import Objection
from consent.registry import JurisdictionRuleRow, Purpose, RetentionOverride
from consent.siprec import SiprecSetting

__all__ = [
    "ApiKey",
    "CallDecision",
    "Client",
    "ConsentEvent",
    "JurisdictionRuleRow",
    "Objection",
    "Purpose",
    "RetentionOverride",
    "SiprecSetting",
]
