"""Our exceptions for everything Neuroon can answer. Callers never see httpx.

Messages never contain the Shop API Key: they are built from status codes and Neuroon's own
error text, never from request headers.
"""

from __future__ import annotations


class NeuroonError(Exception):
    """Base of every Neuroon failure."""

    def __init__(self, operation: str, message: str) -> None:
        super().__init__(f"{operation}: {message}")
        self.operation = operation
        self.message = message


class NeuroonRejected(NeuroonError):
    """Neuroon refused the request (a 4xx other than 429): retrying the same request will not help."""

    def __init__(self, operation: str, status: int, message: str, details: list[str] | None = None) -> None:
        super().__init__(operation, f"HTTP {status}: {message}")
        self.status = status
        self.reason = message
        self.details = details or []

    @property
    def is_auth_failure(self) -> bool:
        """401/403: the key or the Origin is wrong; the whole shop is affected, not this request."""
        return self.status in (401, 403)


class NeuroonUnavailable(NeuroonError):
    """Neuroon could not answer (5xx, timeout, connection error): the same request may succeed later."""

    def __init__(self, operation: str, message: str, status: int | None = None) -> None:
        super().__init__(operation, message)
        self.status = status


class NeuroonRateLimited(NeuroonError):
    """Neuroon answered 429; ``retry_after`` is how long it asked us to wait, in seconds."""

    def __init__(self, operation: str, retry_after: float) -> None:
        super().__init__(operation, f"rate limited; retry after {retry_after:g}s")
        self.retry_after = retry_after
