"""Refusals: a status and a JSON body {"error": code, "message": ..., "status": ...} naming the rule."""

from __future__ import annotations

from typing import Any

# ImageError.kind -> HTTP status: a non-image is an unsupported media type, a too-large one is too large.
KIND_STATUS = {"empty": 400, "truncated": 400, "corrupt": 400, "not_image": 415, "too_large": 413}


class RequestError(Exception):
    """A request the service refuses; becomes `status` with body {"error": code, "message": ...}."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status, self.code, self.message = status, code, message

    def body(self) -> dict[str, Any]:
        return {"error": self.code, "message": self.message, "status": self.status}


class NotReady(RequestError):
    def __init__(self, message: str = "the model is still loading; retry when /readyz is 200"):
        super().__init__(503, "not_ready", message)


# Where a refusal raised below the guard (by the upload parser, or the streamed-size check) waits for the
# guard to answer it: BentoML answers any exception raised while it parses a request with a 500.
REFUSAL_KEY = "garmentseg.refusals"


def refuse(scope: dict[str, Any], err: RequestError) -> RequestError:
    """Record `err` for the guard to answer (the caller raises it); scopes without a guard keep nothing."""
    refusals = scope.get(REFUSAL_KEY)
    if refusals is not None:
        refusals.append(err)
    return err
