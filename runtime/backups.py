"""Per-tenant backups, verified restores into staging, and promotion over the live data.

**What a backup holds.** The tenant's own tables (its schema, or its database) and its
rows of every shared table that carries its id (members, keys, billing, audit trail,
usage, …), one CSV per table, each with its row count and SHA-256, plus the tenant
apps' migration level, in a gzipped tar with a `manifest.json`; the whole archive has a
SHA-256 too and may be Fernet-encrypted (`LEVQOR_BACKUP_ENCRYPT`). It is stored in the
tenant's region (runtime/storage.py) and kept for the plan's `backup_retention_days`.

**Why COPY and not `pg_dump -n`.** pg_dump locks and reads the catalog of every schema
in the database, so one tenant's backup slows as the fleet grows (bench/backup.py
measures both). `COPY (SELECT … FROM <schema>.<table>)` touches only the tenant's
relations, inside one REPEATABLE READ snapshot, so its cost stays flat.

**Restore** always goes into staging first: a new schema built from the blueprint (or a
new database from the tenant template), loaded, then verified table by table (row count
and the SHA-256 of the same ordered CSV read back) and against the migration level.
Shared rows go to tables beside it (`shared__<table>`) for inspection; they are never
written back over live shared tables (the audit trail is append-only, and members/keys
changed since are the live truth). Only a verified staging restore may replace the live
tenant data, in one step, after an automatic backup of what it replaces.
"""
from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import tempfile
import time
from contextlib import contextmanager, nullcontext
from datetime import timedelta

from django.apps import apps
from django.conf import settings
from django.core.files import File
from django.db import connection, connections, transaction
from django.utils import timezone

from compliance import audit
from compliance.alerts import alert_resolve
from levqor.errors import APIError
from levqor.taskqueue import send_after_commit
from runtime.models import Backup
from runtime.storage import presigns, region_storage
from tenants import secrets

logger = logging.getLogger(__name__)
FORMAT = 1
# Not tenant data: the list of backups itself, and the platform's own measurements of the
# tenant (a restore must not rewind its metrics).
SKIP_SHARED = {"tenant_backups", "runtime_metric_rollups"}


# --- what to back up -------------------------------------------------------------------


def tenant_models() -> list:
    """Tenant-app models, parents before children (the order rows can be loaded in)."""
    models = [m for label in settings.TENANT_APPS for m in apps.get_app_config(label).get_models(include_auto_created=True)]
    ordered, seen = [], set()

    def visit(model):
        if model in seen:
            return
        seen.add(model)
        for field in model._meta.concrete_fields:
            target = getattr(field, "related_model", None)
            if field.is_relation and target in models and target is not model:
                visit(target)
        ordered.append(model)

    for model in models:
        visit(model)
    return ordered


def shared_tables() -> list[tuple[str, str]]:
    """(table, tenant column) of every shared table holding per-tenant rows."""
    from tenants.models import Tenant

    found = [(Tenant._meta.db_table, "id")]
    tenant_apps = set(settings.TENANT_APPS)
    for model in apps.get_models(include_auto_created=True):
        meta = model._meta
        if meta.app_label in tenant_apps or not meta.managed or meta.db_table in SKIP_SHARED or model is Tenant:
            continue
        column = next((f.column for f in meta.concrete_fields if f.name in ("tenant", "tenant_id")
                       and (not f.is_relation or f.related_model is Tenant)), None)
        if column:
            found.append((meta.db_table, column))
    return sorted(set(found))


def _columns(cursor, schema: str, table: str) -> list[str]:
    cursor.execute("SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                   "ORDER BY ordinal_position", [schema, table])
    return [row[0] for row in cursor.fetchall()]


def _q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class _HashingWriter(io.RawIOBase):
    """A file that hashes what COPY writes into it."""

    def __init__(self, target):
        self.target, self.sha = target, hashlib.sha256()

    def writable(self):
        return True

    def write(self, data):
        data = data.encode() if isinstance(data, str) else bytes(data)
        self.sha.update(data)
        self.target.write(data)
        return len(data)


def _copy_out(cursor, select_sql: str, params, target) -> str:
    """COPY the query's rows as CSV into `target`; returns the CSV's SHA-256."""
    query = cursor.mogrify(select_sql, params).decode() if params else select_sql
    writer = _HashingWriter(target)
    cursor.copy_expert(f"COPY ({query}) TO STDOUT WITH (FORMAT csv, HEADER true)", writer)
    return writer.sha.hexdigest()


@contextmanager
def _snapshot(alias: str):
    """A read-only REPEATABLE READ snapshot on `alias` (or the surrounding transaction)."""
    conn = connections[alias]
    outermost = not conn.in_atomic_block
    with transaction.atomic(using=alias), conn.cursor() as cursor:
        if outermost:
            cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        yield cursor.cursor  # the psycopg2 cursor: copy_expert, mogrify


@contextmanager
def _tenant_side(tenant):
    """(cursor, schema) of a database tenant's own tables, in a snapshot of its database."""
    from tenants import broker

    with _snapshot(broker.alias_for(tenant)) as cursor:
        yield cursor, "public"


# --- backup ------------------------------------------------------------------------------


def request_backup(*, tenant, trigger: str, actor: str) -> Backup:
    """Record a backup to take; the Celery task takes it (the portal shows its state)."""
    from runtime.backup_tasks import take_backup

    _ensure_active(tenant)
    with transaction.atomic():
        backup = Backup(tenant_id=tenant.id, region=tenant.region, isolation=tenant.isolation, trigger=trigger,
                        actor=actor)
        backup.save(force_insert=True)
        # Broker down: no `running` row that no worker will ever take (503 queue_unavailable).
        send_after_commit(lambda: take_backup.delay(backup.pk),
                          undo=lambda: Backup.dangerously_all_tenants.filter(pk=backup.pk).delete())
    return backup


def backup_tenant(*, tenant, trigger: str = "manual", actor: str = "system", progress=None) -> Backup:
    """Take a backup now (commands, the nightly task)."""
    _ensure_active(tenant)
    backup = Backup(tenant_id=tenant.id, region=tenant.region, isolation=tenant.isolation, trigger=trigger, actor=actor)
    backup.save(force_insert=True)
    return run_backup(backup, progress=progress)


def _ensure_active(tenant) -> None:
    if tenant.status not in ("active", "suspended"):
        raise APIError("invalid_state", f"a {tenant.status} tenant cannot be backed up", status_code=409)


def run_backup(backup: Backup, *, progress=None) -> Backup:
    from policy.plans import plan_limits
    from runtime import lifecycle
    from tenants.models import Tenant

    tenant = Tenant.objects.get(pk=backup.tenant_id)
    storage = region_storage(backup.region)
    started = time.monotonic()
    stored_name = ""
    try:
        with tempfile.TemporaryFile() as archive:
            manifest = _write_archive(tenant, archive, progress=progress)
            archive.seek(0)
            payload = _maybe_encrypt(archive)
            sha = hashlib.sha256()
            for chunk in iter(lambda: payload.read(1 << 20), b""):
                sha.update(chunk)
            size = payload.tell()
            payload.seek(0)
            suffix = ".tar.gz.enc" if settings.LEVQOR_BACKUP_ENCRYPT else ".tar.gz"
            name = f"tenants/{tenant.id}/{timezone.now():%Y%m%dT%H%M%S}-{backup.pk}{suffix}"
            stored_name = storage.save(name, File(payload))
        days = plan_limits(tenant.plan).get("backup_retention_days") or lifecycle.DEFAULT_BACKUP_DAYS
        with transaction.atomic():
            Backup.dangerously_all_tenants.filter(pk=backup.pk).update(
                status=Backup.Status.OK, storage_name=stored_name, size_bytes=size, checksum_sha256=sha.hexdigest(),
                encrypted=settings.LEVQOR_BACKUP_ENCRYPT, manifest_json=manifest,
                duration_ms=int((time.monotonic() - started) * 1000), expires_at=backup.created_at + timedelta(days=days))
            audit.record("backup.created", tenant_id=tenant.id, actor=backup.actor, metadata={
                "backup_id": backup.pk, "size_bytes": size, "sha256": sha.hexdigest(), "trigger": backup.trigger,
                "tables": len(manifest["tables"])})
            # A success clears an earlier failure's alert, so the next failure alerts again.
            alert_resolve(kind="backup.failed", dedupe_key=f"{tenant.id}:backup")
    except Exception as exc:
        if stored_name:
            storage.delete(stored_name)
        _failed(backup, tenant, exc)
        raise
    backup.refresh_from_db()
    return backup


def _failed(backup: Backup, tenant, exc: Exception) -> None:
    from compliance.alerts import alert_raise

    logger.exception("backup %s of %s failed", backup.pk, tenant.slug)
    Backup.dangerously_all_tenants.filter(pk=backup.pk).update(status=Backup.Status.FAILED,
                                                               error=f"{exc.__class__.__name__}: {exc}"[:2000])
    alert_raise(kind="backup.failed", tenant_id=tenant.id, severity="critical",
                message=f"The backup of {tenant.name} failed: {exc.__class__.__name__}",
                metadata={"backup_id": backup.pk}, dedupe_key=f"{tenant.id}:backup")


def _write_archive(tenant, archive, *, progress=None) -> dict:
    from tenants import blueprint

    tables = tenant_models()
    shared = shared_tables()
    total = len(tables) + len(shared)
    manifest = {"format": FORMAT, "tenant": {"id": tenant.id, "slug": tenant.slug, "isolation": tenant.isolation,
                                             "plan": tenant.plan, "region": tenant.region},
                "created_at": timezone.now().isoformat(), "tables": [],
                "migrations": sorted(f"{app}.{name}" for app, name in blueprint.expected_migrations())}
    done = 0

    def step():
        nonlocal done
        done += 1
        if progress:
            progress(done, total)

    # One snapshot of the platform database for the tenant's shared rows (and, for a
    # schema tenant, its tables too); a database tenant's tables get their own.
    with tarfile.open(fileobj=archive, mode="w:gz") as tar, _snapshot("default") as platform:
        with (nullcontext((platform, tenant.schema_name)) if tenant.isolation == "schema"
              else _tenant_side(tenant)) as (cursor, schema):
            for model in tables:
                table, order = model._meta.db_table, model._meta.pk.column
                columns = _columns(cursor, schema, table)
                cols = ", ".join(_q(c) for c in columns)
                select = f"SELECT {cols} FROM {_q(schema)}.{_q(table)} ORDER BY {_q(order)}"
                manifest["tables"].append({**_add(tar, cursor, "tenant", table, columns, select, None), "order_by": order})
                step()
        for table, column in shared:
            columns = _columns(platform, "public", table)
            cols = ", ".join(_q(c) for c in columns)
            select = f"SELECT {cols} FROM public.{_q(table)} WHERE {_q(column)} = %s ORDER BY 1"
            entry = _add(tar, platform, "shared", table, columns, select, [tenant.id])
            manifest["tables"].append({**entry, "tenant_column": column, "order_by": columns[0]})
            step()
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    return manifest


def _add(tar, cursor, scope: str, table: str, columns: list[str], select: str, params) -> dict:
    with tempfile.TemporaryFile() as part:
        sha = _copy_out(cursor, select, params, part)
        size = part.tell()
        part.seek(0)
        count_sql = f"SELECT count(*) FROM ({select}) AS rows"
        cursor.execute(count_sql, params)
        rows = cursor.fetchone()[0]
        info = tarfile.TarInfo(f"{scope}/{table}.csv")
        info.size = size
        tar.addfile(info, part)
    return {"scope": scope, "table": table, "columns": columns, "rows": rows, "sha256": sha}


def _maybe_encrypt(archive):
    if not settings.LEVQOR_BACKUP_ENCRYPT:
        return archive
    out = tempfile.TemporaryFile()
    out.write(secrets.encrypt_bytes(archive.read()))
    out.seek(0)
    return out


# --- restore -------------------------------------------------------------------------------


class RestoreFailed(APIError):
    def __init__(self, message: str, details: dict | None = None):
        super().__init__("restore_failed", message, status_code=409, details=details or {})


def _read_archive(backup: Backup) -> tuple[dict, dict[str, bytes]]:
    """The manifest and CSVs of a stored backup, after checking the archive's SHA-256."""
    if backup.status != Backup.Status.OK:
        raise RestoreFailed(f"backup {backup.pk} is {backup.status}, not restorable")
    storage = region_storage(backup.region)
    try:
        with storage.open(backup.storage_name, "rb") as handle:
            raw = handle.read()
    except FileNotFoundError:
        raise RestoreFailed(f"backup {backup.pk}'s file is missing from the {backup.region} storage") from None
    if hashlib.sha256(raw).hexdigest() != backup.checksum_sha256:
        raise RestoreFailed(f"backup {backup.pk} fails its checksum: the stored file was changed or damaged")
    if backup.encrypted:
        try:
            raw = secrets.decrypt_bytes(raw)
        except ValueError as exc:  # LEVQOR_SECRETS_KEY changed since the backup was taken
            raise RestoreFailed(f"backup {backup.pk}: {exc}") from None
    files = {}
    with tarfile.open(fileobj=io.BytesIO(raw), mode="r:gz") as tar:
        for member in tar.getmembers():
            if member.isfile():
                files[member.name] = tar.extractfile(member).read()
    manifest = json.loads(files.pop("manifest.json"))
    return manifest, files


def integrity_check(tenant) -> tuple[str, str]:
    """The Integrity Pack's "backups recent and restorable": the newest OK backup is younger
    than LEVQOR_KPI_BACKUP_FRESH_HOURS, its stored file matches its checksum and decrypts,
    and it was taken at the tenant apps' current migration level (else a restore would be
    refused). Reading the archive is what a restore does first; nothing is loaded."""
    from tenants import blueprint

    latest = Backup.objects.filter(tenant_id=tenant.id, status=Backup.Status.OK).order_by("-created_at").first()
    if latest is None:
        return "warn", "no backup yet"
    try:
        manifest, _files = _read_archive(latest)
    except RestoreFailed as exc:
        return "fail", f"backup {latest.pk} is not restorable: {exc.message}"
    expected = sorted(f"{app}.{name}" for app, name in blueprint.expected_migrations())
    if manifest["migrations"] != expected:
        return "warn", f"backup {latest.pk} was taken at an older migration level; take a new one"
    age = timezone.now() - latest.created_at
    hours = settings.LEVQOR_KPI_BACKUP_FRESH_HOURS
    if age > timedelta(hours=hours):
        return "warn", f"newest backup {latest.pk} is {age.total_seconds() / 3600:.0f} h old (more than {hours:g} h)"
    return "pass", f"backup {latest.pk} of {latest.created_at:%Y-%m-%d %H:%M} UTC is fresh and restorable"


def staging_names(backup: Backup) -> tuple[str, str]:
    """(staging schema in the platform database, staging tenant database name)."""
    from tenants import broker

    return f"rs_{backup.tenant_id}_{backup.pk}", f"{broker.tenant_database_name(backup.tenant_id)}_rs{backup.pk}"[:63]


def restore_into_staging(backup: Backup, *, actor: str, progress=None) -> dict:
    """Load the backup into staging and verify it. Returns the verification report,
    also kept in the backup's manifest under "restore". Every attempt, failed ones included
    (a damaged file, another migration level, a load error), is counted in
    manifest["restores"]: the staff KPI "restore success" is over attempts."""
    try:
        return _restore_into_staging(backup, actor=actor, progress=progress)
    except Exception as exc:
        if not getattr(exc, "remembered", False):
            _remember_restore(backup, {"verified": False, "at": timezone.now().isoformat(), "actor": actor,
                                       "error": f"{exc.__class__.__name__}: {exc}"[:300], "replaced_live": False})
        raise


def _restore_into_staging(backup: Backup, *, actor: str, progress=None) -> dict:
    from tenants import blueprint, broker

    manifest, files = _read_archive(backup)
    expected = sorted(f"{app}.{name}" for app, name in blueprint.expected_migrations())
    if manifest["migrations"] != expected:
        raise RestoreFailed("the backup was taken at another migration level; migrate it forward first",
                            details={"backup": manifest["migrations"][-3:], "current": expected[-3:]})
    schema, database = staging_names(backup)
    discard_staging(backup)
    blueprint.create_tenant_schema(schema)
    staging_db = None
    if backup.isolation == "database":
        server = broker.server_config(backup.region)
        broker.create_database_from_template(server, database)
        staging_db = _connect(server, database)
    checks, done = [], 0
    ok = False
    try:
        for entry in manifest["tables"]:
            data = files[f"{entry['scope']}/{entry['table']}.csv"]
            if entry["scope"] == "tenant" and staging_db is not None:
                checks.append(_load_and_verify(staging_db.cursor(), "public", entry["table"], entry, data))
            else:
                with connection.cursor() as django_cursor:
                    cursor = django_cursor.cursor
                    table = entry["table"] if entry["scope"] == "tenant" else f"shared__{entry['table']}"
                    if entry["scope"] == "shared":
                        cursor.execute(f"CREATE TABLE {_q(schema)}.{_q(table)} (LIKE public.{_q(entry['table'])})")
                    checks.append(_load_and_verify(cursor, schema, table, entry, data))
            done += 1
            if progress:
                progress(done, len(manifest["tables"]))
        if staging_db is not None:
            staging_db.commit()
        ok = all(c["ok"] for c in checks)
    finally:
        if staging_db is not None:
            staging_db.close()
        if not ok:  # a restore that failed or did not verify leaves no staging behind
            discard_staging(backup)
    verified = ok
    report = {"staging_schema": schema, "staging_database": database if backup.isolation == "database" else None,
              "verified": verified, "checks": checks, "at": timezone.now().isoformat(), "actor": actor,
              "migrations": "match", "replaced_live": False}
    _remember_restore(backup, report)
    if not verified:
        bad = [c["table"] for c in checks if not c["ok"]]
        failed = RestoreFailed(f"staging restore did not verify: {', '.join(bad)}", details={"tables": bad})
        failed.remembered = True
        raise failed
    return report


def _connect(server: dict, name: str):
    import psycopg2

    return psycopg2.connect(dbname=name, user=server.get("USER") or None, password=server.get("PASSWORD") or None,
                            host=server.get("HOST") or None, port=server.get("PORT") or None)


def _load_and_verify(cursor, schema: str, table: str, entry: dict, data: bytes) -> dict:
    target = f"{_q(schema)}.{_q(table)}"
    cols = ", ".join(_q(c) for c in entry["columns"])
    cursor.execute(f"TRUNCATE {target} CASCADE")
    cursor.copy_expert(f"COPY {target} ({cols}) FROM STDIN WITH (FORMAT csv, HEADER true)", io.BytesIO(data))
    _reset_sequences(cursor, schema, table)
    order = _q(entry["order_by"])
    cursor.execute(f"SELECT count(*) FROM {target}")
    rows = cursor.fetchone()[0]
    sha = _copy_out(cursor, f"SELECT {cols} FROM {target} ORDER BY {order}", None, io.BytesIO())
    return {"table": entry["table"], "scope": entry["scope"], "rows": rows, "expected_rows": entry["rows"],
            "sha256_ok": sha == entry["sha256"], "ok": rows == entry["rows"] and sha == entry["sha256"]}


def _reset_sequences(cursor, schema: str, table: str) -> None:
    cursor.execute(
        "SELECT a.attname, pg_get_serial_sequence(format('%%I.%%I', %s::text, %s::text), a.attname) FROM pg_attribute a "
        "JOIN pg_class c ON c.oid = a.attrelid JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped",
        [schema, table, schema, table])
    for column, sequence in cursor.fetchall():
        if sequence:
            cursor.execute(f"SELECT setval(%s, COALESCE((SELECT max({_q(column)}) FROM {_q(schema)}.{_q(table)}), 0) + 1,"
                           " false)", [sequence])


def _remember_restore(backup: Backup, report: dict, *, attempt: bool = True) -> None:
    """The latest report under "restore"; each attempt's outcome appended to "restores"."""
    manifest = dict(Backup.dangerously_all_tenants.get(pk=backup.pk).manifest_json)
    manifest["restore"] = report
    if attempt:
        manifest["restores"] = [*manifest.get("restores", []), {"at": report["at"], "verified": report["verified"]}]
    Backup.dangerously_all_tenants.filter(pk=backup.pk).update(manifest_json=manifest)


def discard_staging(backup: Backup) -> None:
    from tenants import blueprint, broker

    schema, database = staging_names(backup)
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")  # fire deferred checks of rows loaded in this transaction
    blueprint.drop_tenant_schema(schema)
    if backup.isolation == "database":
        broker.drop_database(broker.server_config(backup.region), database)


def replace_live(backup: Backup, *, actor: str) -> dict:
    """Make the verified staging restore the tenant's live data, in one step.

    What it replaces is backed up first (trigger "pre-restore"), so the step can be
    undone by restoring that backup.
    """
    from tenants import broker, hotcache
    from tenants.models import Tenant

    report = (Backup.dangerously_all_tenants.get(pk=backup.pk).manifest_json or {}).get("restore") or {}
    if not report.get("verified") or report.get("replaced_live"):
        raise RestoreFailed("restore into staging and verify it first")
    tenant = Tenant.objects.get(pk=backup.tenant_id)
    safety = backup_tenant(tenant=tenant, trigger="pre-restore", actor=actor)
    schema, database = staging_names(backup)
    with transaction.atomic(), connection.cursor() as cursor:
        # Deferred foreign-key checks of earlier writes in this transaction must fire
        # before their tables may be dropped.
        cursor.execute("SET CONSTRAINTS ALL IMMEDIATE")
        for entry in Backup.dangerously_all_tenants.get(pk=backup.pk).manifest_json["tables"]:
            if entry["scope"] == "shared":
                cursor.execute(f"DROP TABLE IF EXISTS {_q(schema)}.{_q('shared__' + entry['table'])}")
        if tenant.isolation == "schema":
            old = f"{tenant.schema_name}__old{backup.pk}"[:63]
            cursor.execute(f"ALTER SCHEMA {_q(tenant.schema_name)} RENAME TO {_q(old)}")
            cursor.execute(f"ALTER SCHEMA {_q(schema)} RENAME TO {_q(tenant.schema_name)}")
            cursor.execute(f"DROP SCHEMA {_q(old)} CASCADE")
        else:
            cursor.execute(f"DROP SCHEMA {_q(schema)} CASCADE")
    if tenant.isolation == "database":
        _swap_databases(tenant, database)
    hotcache.bump()
    report = {**report, "replaced_live": True, "replaced_at": timezone.now().isoformat(), "pre_restore_backup": safety.pk}
    with transaction.atomic():
        _remember_restore(backup, report, attempt=False)  # the same attempt, now live
        audit.record("backup.restored", tenant_id=tenant.id, actor=actor,
                     metadata={"backup_id": backup.pk, "pre_restore_backup": safety.pk})
    broker.close_thread_connections(only_obsolete=False)
    return report


def _swap_databases(tenant, staging: str) -> None:
    from tenants import broker

    server = broker.server_config(tenant.region)
    live = broker.tenant_database_name(tenant.id)
    old = f"{live}_old"[:63]
    broker.forget(broker.alias_name(tenant.id))
    with broker.maintenance_cursor(server) as cursor:
        for name in (live, staging):
            cursor.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                           "AND pid <> pg_backend_pid()", [name])
        cursor.execute(f"ALTER DATABASE {_q(live)} RENAME TO {_q(old)}")
        cursor.execute(f"ALTER DATABASE {_q(staging)} RENAME TO {_q(live)}")
        cursor.execute(f"DROP DATABASE {_q(old)} WITH (FORCE)")


# --- retention and export ----------------------------------------------------------------


def enforce_retention(*, now=None) -> list[int]:
    """Delete the files of backups past their expiry (or past their plan's retention now);
    the rows stay, marked expired, each with an ExpiredFile record (runtime/lifecycle.py)."""
    from runtime import lifecycle

    return lifecycle.expire_backups(now=now)


EXPORT_SALT = "levqor.backup-export"
EXPORT_SECONDS = 600


def export_url(backup: Backup, *, request, actor: str) -> dict:
    """An expiring, single-use download link (S3: a presigned URL)."""
    from django.core import signing
    from django.urls import reverse

    if backup.status != Backup.Status.OK:
        raise APIError("invalid_state", f"backup {backup.pk} is {backup.status}", status_code=409)
    storage = region_storage(backup.region)
    expires = timezone.now() + timedelta(seconds=EXPORT_SECONDS)
    if presigns(storage):
        url = storage.url(backup.storage_name, expire=EXPORT_SECONDS)
        audit.record("backup.exported", tenant_id=backup.tenant_id, actor=actor,
                     metadata={"backup_id": backup.pk, "via": "presigned"})
    else:
        import secrets as pysecrets

        token = signing.TimestampSigner(salt=EXPORT_SALT).sign_object(
            {"t": backup.tenant_id, "b": backup.pk, "n": pysecrets.token_urlsafe(12)})
        url = request.build_absolute_uri(reverse("backup-download", args=[token]))
    return {"url": url, "expires_at": expires.isoformat()}


def backup_for_token(token: str) -> tuple[Backup | None, str]:
    """The backup a download token names, once: (backup, "") or (None, why)."""
    from django.core import signing

    from levqor.redis import client

    try:
        data = signing.TimestampSigner(salt=EXPORT_SALT).unsign_object(token, max_age=EXPORT_SECONDS)
    except signing.SignatureExpired:
        return None, "expired"
    except signing.BadSignature:
        return None, "invalid"
    backup = Backup.dangerously_all_tenants.filter(pk=data.get("b"), tenant_id=data.get("t"),
                                                   status=Backup.Status.OK).first()
    if backup is None:
        return None, "invalid"
    if not client().set(f"levqor:backup-link:{data.get('n')}", 1, nx=True, ex=EXPORT_SECONDS + 60):
        return None, "used"
    return backup, ""
