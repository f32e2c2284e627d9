"""API key format, generation and verification.

A key reads `lvq_<prefix>_<secret>` (tenant) or `lvqs_<prefix>_<secret>` (platform
staff). The prefix is public: it is stored in clear, shown in lists and audit trails,
and used to find the row; the whole key is verified against a keyed hash in constant
time. 32 random bytes of secret make guessing pointless.
"""
from __future__ import annotations

import hmac
import re
import secrets
from dataclasses import dataclass

from tenants.secrets import keyed_hash

TENANT_KEY_KIND = "lvq"
PLATFORM_KEY_KIND = "lvqs"
_KEY_RE = re.compile(r"^(lvqs?)_([a-z0-9]{8})_([A-Za-z0-9_-]{43})$")
_ALPHABET = "abcdefghijklmnopqrstuvwxyz0123456789"


@dataclass(frozen=True)
class NewKey:
    plaintext: str
    prefix: str
    hash: str


@dataclass(frozen=True)
class ParsedKey:
    kind: str
    prefix: str
    plaintext: str


def generate(kind: str = TENANT_KEY_KIND) -> NewKey:
    prefix = f"{kind}_" + "".join(secrets.choice(_ALPHABET) for _ in range(8))
    plaintext = f"{prefix}_{secrets.token_urlsafe(32)}"
    return NewKey(plaintext=plaintext, prefix=prefix, hash=keyed_hash(plaintext))


def parse(raw: str) -> ParsedKey | None:
    match = _KEY_RE.match(raw or "")
    if not match:
        return None
    kind, short, _ = match.groups()
    return ParsedKey(kind=kind, prefix=f"{kind}_{short}", plaintext=raw)


def matches(parsed: ParsedKey, stored_hash: str) -> bool:
    return hmac.compare_digest(digest(parsed.plaintext), stored_hash)


def digest(raw: str) -> str:
    """The keyed hash a presented key is stored and verified under (see matches())."""
    return keyed_hash(raw)
