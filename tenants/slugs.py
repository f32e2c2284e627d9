"""Tenant slugs: DNS labels that become hostnames and schema names."""
from __future__ import annotations

import re

SLUG_RE = re.compile(r"^[a-z][a-z0-9-]{1,38}[a-z0-9]$")
RESERVED = frozenset({
    "public", "www", "api", "admin", "static", "media", "template", "templates", "levqor", "levqor-main",
    "information-schema", "information_schema", "postgres", "root", "app", "mail", "smtp", "status",
    "docs", "help", "support", "billing", "auth", "login", "signup", "org", "insights", "marketplace",
    "metrics", "healthz", "readyz", "internal", "system", "staff",
})


def slug_problem(slug) -> str | None:
    """Why `slug` is not acceptable, or None when it is."""
    if not isinstance(slug, str):
        return "slug must be a string"
    if not 3 <= len(slug) <= 40:
        return "slug must be 3 to 40 characters long"
    if not SLUG_RE.match(slug):
        return "slug may hold lowercase letters, digits and hyphens, start with a letter and not end with a hyphen"
    if "--" in slug:
        return "slug may not contain two hyphens in a row"
    if slug in RESERVED or slug.startswith("pg-") or slug.startswith("pg_"):
        return f"slug {slug!r} is reserved"
    return None
