"""Regions: where a tenant's data, backups and workers live.

`LEVQOR_REGIONS` is either a comma list of region names, all served by DATABASE_URL,
or a JSON object mapping each region to its parts:

    {"eu-west": {"database_url": "postgres://...", "replica_url": "postgres://...",
                 "storage": "/var/lib/levqor/backups/eu-west"}}

`storage` is a folder, or `s3://bucket/prefix` for an S3 bucket; `storage_endpoint_url`
points S3 storage at an S3-compatible server other than AWS (MinIO, Ceph, a local test
server). Credentials come from the usual AWS_* variables, never from this setting.

The first region listed is the default for new tenants.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import dj_database_url

DEFAULT_REGION = "local"


@dataclass(frozen=True)
class Region:
    name: str
    database: dict  # Django DATABASES-style dict of the region's primary server
    replica_url: str | None
    storage: str
    storage_endpoint_url: str | None = None  # S3 storage only: a non-AWS S3-compatible server


def _database_url(db: dict) -> str:
    user = quote(db.get("USER") or "")
    password = f":{quote(db['PASSWORD'])}" if db.get("PASSWORD") else ""
    auth = f"{user}{password}@" if user else ""
    host = db.get("HOST") or ""
    if host.startswith("/"):
        return f"postgres://{auth}/{db['NAME']}?host={quote(host)}" + (f"&port={db['PORT']}" if db.get("PORT") else "")
    port = f":{db['PORT']}" if db.get("PORT") else ""
    return f"postgres://{auth}{host}{port}/{db['NAME']}"


def parse_regions(raw: str, *, default_database_url: dict) -> dict[str, Region]:
    raw = (raw or "").strip()
    base_storage = Path(__file__).resolve().parent.parent / ".levqor" / "storage"
    if not raw:
        raw = DEFAULT_REGION
    if raw.startswith("{"):
        spec = json.loads(raw)
        regions = {}
        for name, parts in spec.items():
            db = dj_database_url.parse(parts["database_url"]) if parts.get("database_url") else dict(default_database_url)
            regions[name] = Region(
                name=name,
                database=db,
                replica_url=parts.get("replica_url"),
                storage=parts.get("storage") or str(base_storage / name),
                storage_endpoint_url=parts.get("storage_endpoint_url") or None,
            )
        return regions
    return {
        name: Region(name=name, database=dict(default_database_url), replica_url=None, storage=str(base_storage / name))
        for name in (part.strip() for part in raw.split(","))
        if name
    }


def region_database_url(region: Region) -> str:
    return _database_url(region.database)
