"""The shared Redis client (counters, rate limits, cache), and a connection per thread for
the one command every tenant request sends (policy/quotas.py)."""
import os
import threading
from functools import lru_cache

import redis
from django.conf import settings


@lru_cache(maxsize=1)
def client() -> redis.Redis:
    return redis.Redis.from_url(settings.REDIS_URL, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30)


class _ThreadConnection(threading.local):
    owner = None  # (client, pid) the connection was made for
    conn = None


_thread = _ThreadConnection()


def thread_connection():
    """This thread's own connection to the shared client's server.

    redis-py 8 wraps each pooled command in observability hooks, event dispatch and
    per-call wrappers, and borrowing from the pool takes a lock and a poll: together more
    Python than the quota script's round trip itself. A thread's own connection needs
    none of that. It is made from the pool's own settings, and made anew after a fork or
    when `client()` is rebuilt (tests point it at another server).
    """
    owner = (client(), os.getpid())
    if _thread.owner != owner:
        pool = owner[0].connection_pool
        _thread.conn, _thread.owner = pool.connection_class(**pool.connection_kwargs), owner
    return _thread.conn


def send(conn, *args) -> None:
    """Send one command on `conn`; read its reply with receive().

    As the pool does on every borrow, a connection the server has closed (a restart), or
    one holding a reply nobody read, is reopened first, so a command is never sent on a
    dead socket and then sent again, nor answered with another command's reply.
    """
    if getattr(conn, "_sock", None) is None:  # first use, or dropped after an error
        conn.connect()
    else:
        try:
            stale = conn.can_read()
        except (redis.ConnectionError, redis.TimeoutError, OSError):
            stale = True
        if stale:
            conn.disconnect()
            conn.connect()
    # No periodic PING health check on top: can_read() has just looked at the socket.
    conn.send_packed_command(conn.pack_command(*args), check_health=False)


def receive(conn):
    """The reply to the command send() put on `conn`."""
    return conn.read_response()


def call(conn, *args):
    """Send one command on `conn` and return its reply."""
    send(conn, *args)
    return receive(conn)
