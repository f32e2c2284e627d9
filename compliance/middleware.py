"""Gives audit.record() the request's client IP and user agent without threading the
request through every service."""
from compliance.audit import request_context


class AuditRequestMiddleware:
    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        with request_context(request):
            return self.get_response(request)
