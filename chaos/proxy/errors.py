"""The API's error: Toxiproxy's status codes and messages, in one exception.

Toxiproxy answers every failure with `{"error": <message>, "status": <code>}` and a newline;
the messages a client may match on are spelled here exactly as the Go server spells them
(reference: shared/reference/toxiproxy-api.md, section 1).
"""

from __future__ import annotations

BAD_REQUEST = 400
NOT_FOUND = 404
CONFLICT = 409
SERVER_ERROR = 500

PROXY_NOT_FOUND = "proxy not found"
TOXIC_NOT_FOUND = "toxic not found"
PROXY_EXISTS = "proxy already exists"
TOXIC_EXISTS = "toxic already exists"
INVALID_STREAM = "stream was invalid, can be either upstream or downstream"
INVALID_TOXIC_TYPE = "invalid toxic type"


class ApiError(Exception):
    """A request the server refuses: `status` is the HTTP code, `message` the `error` text."""

    def __init__(self, status: int, message: str) -> None:
        self.status = status
        self.message = message
        super().__init__(f"{status}: {message}")


def bad_body(detail: str) -> ApiError:
    return ApiError(BAD_REQUEST, f"bad request body: {detail}")


def missing_field(field: str) -> ApiError:
    return ApiError(BAD_REQUEST, f"missing required field: {field}")
