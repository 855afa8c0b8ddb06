"""The controller's error types, apart from the clients that raise them.

Pure modules catch or describe these without importing the AWS clients (import-linter keeps
the planner's import graph free of I/O).
"""

from __future__ import annotations


class AwsError(Exception):
    """An AWS call failed after botocore's own retries."""

    def __init__(self, operation: str, kind: str, message: str) -> None:
        self.operation = operation
        self.kind = kind
        self.message = message
        super().__init__(f"{operation}: {kind}: {message}")
