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


@lru_cache(maxsize=4)
def _pepper(secret: str) -> bytes:
    return hashlib.sha256(b"levqor-keys-v1:" + secret.encode()).digest()


def keyed_hash(value: str) -> str:
    return hmac.new(_pepper(settings.LEVQOR_SECRETS_KEY), value.encode(), hashlib.sha256).hexdigest()


def mask(value: str, keep: int = 4) -> str:
    return value[:keep] + "…" if value else ""
