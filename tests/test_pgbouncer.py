"""Schema per tenant behind a real PgBouncer in transaction mode: every statement must
see its own tenant's schema, whichever server connection the pooler hands it.

The control run (the default, session-level search_path) shows the known failure through
the same pooler; LEVQOR_DB_POOLING=transaction fixes it.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from django.conf import settings

from tests.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import json, os, sys, threading
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")
import django
django.setup()
from django.db import connections
from tenants.context import tenant_context
from tenants.models import Tenant
from workflows.models import Workflow

slugs = sys.argv[1:]
tenants = {t.slug: t for t in Tenant.objects.filter(slug__in=slugs)}
result = {"checks": 0, "wrong": 0, "errors": 0}
lock = threading.Lock()

def worker(index):
    slug = slugs[index % len(slugs)]
    try:
        for _ in range(40):
            with tenant_context(tenants[slug]):
                try:
                    names = list(Workflow.objects.values_list("name", flat=True))
                    ok = names == [f"only-in-{slug}"]
                    with lock:
                        result["checks"] += 1
                        result["wrong"] += 0 if ok else 1
                except Exception:
                    with lock:
                        result["errors"] += 1
    finally:
        connections.close_all()

threads = [threading.Thread(target=worker, args=(i,)) for i in range(6)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(result))
"""


@pytest.fixture
def pgbouncer():
    binary = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(binary).exists():
        pytest.fail("PgBouncer is required (make test installs Debian's pgbouncer)")
    db = settings.DATABASES["default"]
    port = free_port()
    # Outside pytest's 0700 temp tree: PgBouncer drops root and runs as `postgres`.
    folder = Path(tempfile.mkdtemp(prefix="levqor-pgbouncer-"))
    folder.chmod(0o777)
    ini = folder / "pgbouncer.ini"
    ini.write_text(f"""[databases]
* = host={db.get('HOST') or '127.0.0.1'} port={db.get('PORT') or 5432} user={db.get('USER') or 'postgres'}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = any
pool_mode = transaction
default_pool_size = 2
max_client_conn = 200
ignore_startup_parameters = extra_float_digits,options
logfile = {folder}/pgbouncer.log
pidfile = {folder}/pgbouncer.pid
""")
    ini.chmod(0o644)
    command = [binary, str(ini)] + (["-u", "postgres"] if os.geteuid() == 0 else [])
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if not wait_for_port(port):
        proc.kill()
        log = folder / "pgbouncer.log"
        pytest.fail("PgBouncer did not start: " + (log.read_text()[-500:] if log.exists() else "no log"))
    yield port
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=10)
    shutil.rmtree(folder, ignore_errors=True)


def _probe(port: int, slugs, pooling: str) -> dict:
    db = settings.DATABASES["default"]
    env = {**os.environ, "DJANGO_DEBUG": "true", "REDIS_URL": settings.REDIS_URL, "LEVQOR_DB_POOLING": pooling,
           "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@127.0.0.1:{port}/{db['NAME']}",
           "DATABASE_CONN_MAX_AGE": "60", "LEVQOR_LOG_LEVEL": "ERROR"}
    out = subprocess.run([sys.executable, "-c", PROBE, *slugs], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.django_db(transaction=True)
def test_each_statement_sees_its_own_tenant_behind_pgbouncer(make_tenant, pgbouncer):
    from tests.conftest import client_for

    slugs = []
    for _ in range(2):
        tenant, key = make_tenant()
        client_for(key, tenant).post("/api/workflows", {"name": f"only-in-{tenant.slug}"}, format="json")
        slugs.append(tenant.slug)
    fixed = _probe(pgbouncer, slugs, "transaction")
    assert fixed == {"checks": 240, "wrong": 0, "errors": 0}
    control = _probe(pgbouncer, slugs, "session")
    assert control["wrong"] + control["errors"] > 0, control  # the known failure, reproduced


PROVISION = r"""
import json, os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "levqor.settings")
import django
django.setup()
from django.db import connection
from tenants import services
from tenants.context import tenant_context
from workflows.models import Workflow

result = services.tenant_create(name="Pooled", slug=sys.argv[1], plan="core", admin_email="o@pooled.test", actor="test")
with tenant_context(result.tenant):
    Workflow.objects.create(name="pooled-first", created_by="test")
with connection.cursor() as cursor:
    cursor.execute("SELECT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
                   "WHERE c.relname = 'workflows_workflow' AND n.nspname IN ('public', %s)", [result.tenant.schema_name])
    print(json.dumps({"schemas": sorted(r[0] for r in cursor.fetchall()), "schema": result.tenant.schema_name}))
"""


@pytest.mark.django_db(transaction=True)
def test_a_tenant_provisioned_through_pgbouncer_gets_its_tables_in_its_own_schema(pgbouncer):
    """Creating a schema sets its path for the DDL; behind a transaction-mode pooler every
    statement carries the connection's path, so a raw SET LOCAL was overridden and the
    tables went to public. The switch now goes through the connection's schema."""
    from tests.conftest import unique_slug

    db = settings.DATABASES["default"]
    slug = unique_slug("pool")
    env = {**os.environ, "DJANGO_DEBUG": "true", "REDIS_URL": settings.REDIS_URL, "LEVQOR_DB_POOLING": "transaction",
           "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@127.0.0.1:{pgbouncer}/{db['NAME']}",
           "LEVQOR_LOG_LEVEL": "ERROR", "LEVQOR_SIGNUP_RATE": "1000/hour"}
    out = subprocess.run([sys.executable, "-c", PROVISION, slug], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=180)
    assert out.returncode == 0, out.stderr[-2000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["schemas"] == [found["schema"]]  # in the tenant's schema, and nothing in public
