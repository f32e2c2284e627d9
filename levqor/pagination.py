"""The API's one pagination: limit/offset with a ceiling.

DRF's LimitOffsetPagination has no maximum by default, so `?limit=100000000` made one
request read and serialize a whole table (found by the pen-test pass, docs/security.md).
"""
from rest_framework.pagination import LimitOffsetPagination


class BoundedLimitOffsetPagination(LimitOffsetPagination):
    default_limit = 50
    max_limit = 200
