"""Errors users see: which field, which value, and why."""

from __future__ import annotations

from typing import Any


class InvalidField(Exception):
    """One rejected input."""

    def __init__(self, field: str, value: Any, reason: str, code: str | None = None) -> None:
        self.field = field
        self.value = value
        self.reason = reason
        # A stable machine code ("suppressed", "no_address") that interfaces translate.
        self.code = code
        super().__init__(f"{field}: {value!r} {reason}")

    def as_dict(self) -> dict[str, Any]:
        result = {"field": self.field, "value": self.value, "reason": self.reason}
        if self.code:
            result["code"] = self.code
        return result


class InvalidInput(Exception):
    """A request or command was rejected; ``errors`` lists every bad field. Nothing changed."""

    def __init__(self, errors: list[InvalidField]) -> None:
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))

    @classmethod
    def one(cls, field: str, value: Any, reason: str, code: str | None = None) -> InvalidInput:
        return cls([InvalidField(field, value, reason, code)])


class NotFound(Exception):
    """The thing named does not exist (or is not visible to the caller)."""
