"""A database of the benchmark's own: configured before Django starts, dropped after."""
from __future__ import annotations

import os
import sys
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def configure(name: str, **env) -> None:
    """Point DATABASE_URL at `name` on the configured server (BENCH_DATABASE_URL wins)."""
    base = os.environ.get("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/levqor").rsplit("/", 1)[0]
    os.environ["DATABASE_URL"] = os.environ.get("BENCH_DATABASE_URL", f"{base}/{name}")
    os.environ.setdefault("DJANGO_DEBUG", "true")
    os.environ["DJANGO_SETTINGS_MODULE"] = "levqor.settings"
    os.environ.setdefault("LEVQOR_LOG_LEVEL", "WARNING")
    os.environ.update(env)
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))


@contextmanager
def bench_database(*, fresh: bool, keep: bool):
    """Create the database (anew when `fresh`), set Django up, drop it (and its tenant
    template database) at the end unless `keep`."""
    import dj_database_url
    import psycopg2

    db = dj_database_url.parse(os.environ["DATABASE_URL"])
    admin = psycopg2.connect(dbname="postgres", user=db.get("USER") or None, host=db.get("HOST") or None,
                             port=db.get("PORT") or None, password=db.get("PASSWORD") or None)
    admin.autocommit = True
    with admin.cursor() as cursor:
        if fresh:
            cursor.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}" WITH (FORCE)')
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", [db["NAME"]])
        if not cursor.fetchone():
            cursor.execute(f'CREATE DATABASE "{db["NAME"]}"')
    import django

    django.setup()
    try:
        yield
    finally:
        from django.db import connections

        connections.close_all()
        if not keep:
            with admin.cursor() as cursor:
                cursor.execute(f'DROP DATABASE IF EXISTS "{db["NAME"]}" WITH (FORCE)')
                cursor.execute(f'DROP DATABASE IF EXISTS "{db["NAME"][:40]}_tpl" WITH (FORCE)')
        admin.close()
