"""Every table of the retention layer, imported in one place for migrations and tests."""

from retention.holds import LegalHold, LegalHoldTarget
from retention.subjects import SubjectRequest

__all__ = ["LegalHold", "LegalHoldTarget", "SubjectRequest"]
