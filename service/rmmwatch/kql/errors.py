"""The one error type of the KQL front end: a message with the line and column it is about."""

from __future__ import annotations


class KqlError(Exception):
    """A query rmmwatch cannot run, located in the query text (1-based line and column)."""

    def __init__(self, message: str, line: int, column: int) -> None:
        super().__init__(message)
        self.message = message
        self.line = line
        self.column = column

    def __str__(self) -> str:
        return f"{self.message} (query line {self.line}, column {self.column})"
