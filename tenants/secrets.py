"""Secrets at rest: encrypted with a key derived from LEVQOR_SECRETS_KEY.

Used for tenant database DSNs now, SSO and SIEM secrets later. Values are never
logged; `mask()` is what may appear in logs and admin pages.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
from functools import lru_cache

from cryptography.fernet import Fernet, InvalidToken
from django.conf import settings


@lru_cache(maxsize=4)
def _fernet(secret: str) -> Fernet:
    digest = hashlib.sha256(b"levqor-secrets-v1:" + secret.encode()).digest()
    return Fernet(base64.urlsafe_b64encode(digest))


def encrypt(value: str) -> str:
    return _fernet(settings.LEVQOR_SECRETS_KEY).encrypt(value.encode()).decode()


def decrypt(token: str) -> str:
    try:
        return _fernet(settings.LEVQOR_SECRETS_KEY).decrypt(token.encode()).decode()
    except InvalidToken as exc:  # a wrong or rotated LEVQOR_SECRETS_KEY
        raise ValueError("secret cannot be decrypted with the configured LEVQOR_SECRETS_KEY") from exc


def encrypt_bytes(data: bytes) -> bytes:
    """For whole files (backup archives): the same key and scheme as `encrypt`."""
    return _fernet(settings.LEVQOR_SECRETS_KEY).encrypt(data)


def decrypt_bytes(data: bytes) -> bytes:
    try:
        return _fernet(settings.LEVQOR_SECRETS_KEY).decrypt(data)
    except InvalidToken as exc:
        raise ValueError("data cannot be decrypted with the configured LEVQOR_SECRETS_KEY") from exc


@lru_cache(maxsize=4)
def _pepper(secret: str) -> bytes:
    return hashlib.sha256(b"levqor-keys-v1:" + secret.encode()).digest()


def keyed_hash(value: str) -> str:
    # hmac.digest: the same HMAC-SHA256 as hmac.new(...).hexdigest(), in one C call (it runs
    # on every API request).
    return hmac.digest(_pepper(settings.LEVQOR_SECRETS_KEY), value.encode(), "sha256").hex()


def mask(value: str, keep: int = 4) -> str:
    return value[:keep] + "…" if value else ""
