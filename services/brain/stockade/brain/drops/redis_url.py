"""`--redis-url` → an asyncio Redis client: a single server, a Sentinel-managed master, or a Cluster.

Accepted URLs (credentials optional; ``rediss`` variants use TLS):

* ``redis://[user:password@]host[:port][/db]``, ``rediss://…``, ``unix:///path/to/socket[?db=N]``
  — one server (redis-py's own ``from_url``, so its query options work too).
* ``redis+sentinel://[user:password@]host:port[,host:port…]/service-name[/db][?sentinel_password=…]``
  — the master Sentinel names for ``service-name`` (default ``mymaster``); credentials are the
  master's, ``sentinel_password`` the sentinels' own. Uses ``redis.asyncio.sentinel.Sentinel``.
* ``redis+cluster://[user:password@]host:port[,host:port…]`` — a Redis Cluster, from any of
  its nodes. Uses ``redis.asyncio.cluster.RedisCluster``.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from redis.asyncio import Redis
from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.sentinel import Sentinel

RedisClient = Redis | RedisCluster

SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel", "redis+cluster", "rediss+cluster")


def _hosts(hostlist: str, default_port: int) -> list[tuple[str, int]]:
    out = []
    for item in hostlist.split(","):
        host, sep, port = item.strip().rpartition(":")
        if not sep:
            host, port = port, str(default_port)
        if not host:
            raise ValueError(f"bad host {item!r} in Redis URL")
        out.append((host.strip("[]"), int(port)))
    return out


def _split(url: str) -> tuple[str, str | None, str | None, list[tuple[str, int]], str, dict[str, list[str]]]:
    parts = urlsplit(url)
    userinfo, _, hostlist = parts.netloc.rpartition("@")
    user, password = None, None
    if userinfo:
        u, _, p = userinfo.partition(":")
        user, password = (unquote(u) or None), (unquote(p) or None)
    if not hostlist:
        raise ValueError(f"no host in Redis URL {url!r}")
    return parts.scheme, user, password, _hosts(hostlist, 26379 if "sentinel" in parts.scheme else 6379), \
        parts.path, parse_qs(parts.query)  # fmt: skip


def connect(url: str, **kwargs: Any) -> RedisClient:
    """A client for ``url`` (see the module doc for schemes). Connects lazily, on first use.

    Extra keyword arguments go to the connections. Socket timeouts default to 5 s (2 s to
    connect) so a Redis that hangs counts as away instead of stalling the flushes."""
    kwargs.setdefault("socket_timeout", 5.0)
    kwargs.setdefault("socket_connect_timeout", 2.0)
    scheme = urlsplit(url).scheme
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported Redis URL scheme {scheme!r}; use one of {', '.join(SCHEMES)}")
    tls = scheme.startswith("rediss")
    if scheme.endswith("+sentinel"):
        _, user, password, hosts, path, query = _split(url)
        segs = [s for s in path.split("/") if s]
        service = segs[0] if segs else "mymaster"
        db = int(segs[1]) if len(segs) > 1 else 0
        sentinel_kwargs: dict[str, Any] = {"ssl": tls} if tls else {}
        if "sentinel_password" in query:
            sentinel_kwargs["password"] = query["sentinel_password"][0]
        conn = {"username": user, "password": password, "db": db, **({"ssl": True} if tls else {}), **kwargs}
        sentinel = Sentinel(hosts, sentinel_kwargs=sentinel_kwargs, **conn)
        return sentinel.master_for(service)
    if scheme.endswith("+cluster"):
        _, user, password, hosts, _, _ = _split(url)
        return RedisCluster(
            startup_nodes=[ClusterNode(h, p) for h, p in hosts],
            username=user,
            password=password,
            ssl=tls,
            **kwargs,
        )
    return Redis.from_url(url, **kwargs)
