import time

from django.conf import settings

from levqor.errors import error_response


class BodySizeLimitMiddleware:
    """Refuse oversized bodies with 413 before anything reads them.

    Django only enforces DATA_UPLOAD_MAX_MEMORY_SIZE when `request.body` is read, and
    DRF's parsers read the stream directly, so the limit is applied here once.
    """

    def __init__(self, get_response):
        self.get_response = get_response
        self.limit = settings.LEVQOR_MAX_BODY_BYTES

    def __call__(self, request):
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return error_response(400, "bad_content_length", "Content-Length is not a number.")
        if length > self.limit:
            return error_response(413, "payload_too_large", f"The request body is larger than {self.limit} bytes.",
                                  {"limit_bytes": self.limit})
        return self.get_response(request)


class RequestMetricsMiddleware:
    """Time every request and count it, for the fleet and for its tenant (runtime/metrics.py).

    First in MIDDLEWARE, so the figure covers the whole stack. Recording is an in-memory
    update; the figures are written in batches after responses, never on a request's way.
    """

    def __init__(self, get_response):
        from runtime.metrics import record_request

        self.get_response = get_response
        self.record = record_request

    def __call__(self, request):
        started = time.perf_counter()
        response = self.get_response(request)
        self.record(request, response.status_code, (time.perf_counter() - started) * 1000)
        return response
