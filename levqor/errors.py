"""One error shape for every client-visible failure (API.md):

    {"error": {"code": "<machine_code>", "message": "<human text>", "details": {...}}}

Raise `APIError` (or one of DRF's exceptions) from services and views; middleware,
which runs outside DRF, builds the same body with `error_response`.
"""
from __future__ import annotations

import logging

from django.core.exceptions import PermissionDenied, RequestDataTooBig
from django.db import InterfaceError, OperationalError
from django.http import Http404, JsonResponse
from rest_framework import exceptions

logger = logging.getLogger(__name__)


class APIError(exceptions.APIException):
    """A client-caused failure with a stable machine code."""

    def __init__(self, code: str, message: str, *, status_code: int = 400, details: dict | None = None, headers: dict | None = None):
        super().__init__(detail=message, code=code)
        self.status_code = status_code
        self.code = code
        self.message = message
        self.details = details or {}
        self.headers = headers or {}


def error_body(code: str, message: str, details: dict | None = None) -> dict:
    return {"error": {"code": code, "message": message, "details": details or {}}}


def error_response(status_code: int, code: str, message: str, details: dict | None = None, headers: dict | None = None) -> JsonResponse:
    response = JsonResponse(error_body(code, message, details), status=status_code)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


_DRF_CODES = {
    exceptions.ParseError: "malformed_request",
    exceptions.AuthenticationFailed: "authentication_failed",
    exceptions.NotAuthenticated: "not_authenticated",
    exceptions.PermissionDenied: "forbidden",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid_input",
}


def api_exception_handler(exc, context):
    if isinstance(exc, APIError):
        response = JsonResponse(error_body(exc.code, exc.message, exc.details), status=exc.status_code)
        for name, value in exc.headers.items():
            response[name] = value
        return response
    if isinstance(exc, RequestDataTooBig):
        return error_response(413, "payload_too_large", "The request body is larger than allowed.")
    if isinstance(exc, (OperationalError, InterfaceError)):
        # The database is unreachable (restarting, failing over) or dropped the connection.
        # A 503 tells the client to retry (docs/chaos.md); a connection lost during COMMIT
        # leaves the outcome unknown, so writes that must not double carry their own keys.
        logger.warning("database unavailable: %s", exc)
        return error_response(503, "database_unavailable", "The database is unavailable. Retry shortly.",
                              headers={"Retry-After": "2"})
    if isinstance(exc, Http404):
        exc = exceptions.NotFound()
    elif isinstance(exc, PermissionDenied):
        exc = exceptions.PermissionDenied()

    from rest_framework.views import exception_handler  # not at import: DRF's views import our auth classes

    response = exception_handler(exc, context)
    if response is None:
        return None  # a real server error: Django's handler500 answers and logs it
    code = next((c for cls, c in _DRF_CODES.items() if isinstance(exc, cls)), "error")
    if isinstance(exc, exceptions.ValidationError):
        message = "The request body is not valid."
        details = {"fields": response.data} if isinstance(response.data, dict) else {"errors": response.data}
    else:
        message = str(getattr(exc, "detail", "")) or "Request failed."
        details = {}
        if isinstance(exc, exceptions.ParseError):
            code = "malformed_json"
    if isinstance(exc, exceptions.Throttled) and exc.wait:
        response["Retry-After"] = str(int(exc.wait) + 1)
    response.data = error_body(code, message, details)
    return response


def handler404(request, exception=None):
    return error_response(404, "not_found", "No such resource.")


def handler500(request):
    return error_response(500, "server_error", "Something went wrong on our side; it has been logged.")


def handler400(request, exception=None):
    return error_response(400, "bad_request", "The request could not be understood.")


def handler403(request, exception=None):
    return error_response(403, "forbidden", "You may not do that.")
