"""Errors a pure domain decision raises; the HTTP layer maps them to problem details."""

from __future__ import annotations


class DomainError(Exception):
    status_code = 409

    def __init__(self, rule: str, detail: str) -> None:
        self.rule = rule
        self.detail = detail
        super().__init__(f"{rule}: {detail}")


class RuleViolation(DomainError):
    """A command breaks a lifecycle rule (HTTP 409, the rule named)."""


class NotFound(DomainError):
    status_code = 404


class InvalidCommand(DomainError):
    """Well-formed but semantically wrong input (HTTP 422, the field named)."""

    status_code = 422

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__("invalid_field", detail)


class Forbidden(DomainError):
    """The caller's role may not give a field this value (HTTP 403, the field named): a
    technician raising parts for another technician. (Outside its reach a resource does
    not exist: that is NotFound, not this.)"""

    status_code = 403

    def __init__(self, field: str, detail: str) -> None:
        self.field = field
        super().__init__("forbidden", detail)
