"""Redis layout of the drop counts, the writes (one transaction per flush) and the queries.

Keys (``P`` is the prefix, ``{stockade}:drops`` by default; the ``{…}`` hash tag puts every key
in one Cluster slot so a flush stays one MULTI/EXEC transaction on a Cluster too):

* ``P:m:<minute>`` — hash, encoded flow (`flows.FIELDS`) → blocked attempts in that minute
  (minutes since the epoch). Expires ``retention`` seconds after the minute ends.
* ``P:lost:<minute>`` — integer, events of that minute counted in memory while Redis was away
  and then shed because the in-memory bound was hit (the shortfall). Same expiry.
* ``P:recent`` — stream of recent events, each entry a chunk of up to `CHUNK` events (one per
  line, `RECORD_FIELDS` joined by ``|``; every field is validated or `record_text`-quoted, so
  none holds a delimiter), capped with ``XADD MAXLEN ~``; expires when idle.
* ``P:refused:<minute>`` — hash, ``<node>|<reason>`` → events refused from that node in that
  minute (of the brain's clock): ``invalid``, ``quota`` or ``buffer_full``. Same expiry.
* ``P:flushed:<writer>`` — the last flush number this writer applied, so a flush whose reply was
  lost can be checked instead of applied twice.
* ``P:seq:<node>/<instance>`` — the highest batch number of that agent process whose events are
  stored, by any brain: every brain's flush adds an agent's batches only if they come after it
  (see `Piece`), in the same transaction as the counts, so a batch two brains counted (a lost ack, an
  agent that moved while its old brain still held counts) is stored once. Expires ``retention``
  seconds after the last write (an agent process that silent has nothing left to re-send).
"""

from __future__ import annotations

import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from stockade.brain.drops import flows
from stockade.brain.drops.redis_url import RedisClient

DEFAULT_PREFIX = "{stockade}:drops"
DEFAULT_RETENTION = 25 * 3600  # 24 h of windows + 1 h margin
CHUNK = 256  # events per stream entry

# Fields of one recent-event record (in the stream), in order.
RECORD_FIELDS: tuple[str, ...] = (
    "time",
    "node",
    "direction",
    "protocol",
    "src",
    "sport",
    "dst",
    "dport",
    "src_namespace",
    "src_pod",
    "dst_namespace",
    "dst_pod",
    "chain",
    "policies",  # comma-separated "namespace/name" of the policies isolating the denying side
)

# HINCRBY many fields of one hash in one command: far cheaper for the client than one command
# per field. KEYS[1] the hash; ARGV[1] its expiry (epoch seconds); then field, increment pairs.
_HINCRBY_MANY = """
local k = KEYS[1]
for i = 2, #ARGV, 2 do redis.call('HINCRBY', k, ARGV[i], ARGV[i + 1]) end
redis.call('EXPIREAT', k, ARGV[1])
return 1
"""


# An agent process's batches lo..hi, added only if none of them is stored. KEYS[1] the `P:seq:`
# record, KEYS[2..] minute hashes; ARGV lo, hi, the record's ttl, then per minute hash: its
# expiry, its number of fields, field, increment pairs. Returns -1 when added, else the stored
# number (>= hi: all stored already; otherwise they overlap: nothing added). A gap before lo is
# no reason to refuse: its batches were stored without a record (an older brain), or lost.
_PIECE = """
local r = tonumber(redis.call('GET', KEYS[1]) or '-1')
if r >= tonumber(ARGV[1]) then return r end
local a = 4
for k = 2, #KEYS do
  local exp, n = ARGV[a], tonumber(ARGV[a + 1])
  a = a + 2
  for _ = 1, n do
    redis.call('HINCRBY', KEYS[k], ARGV[a], ARGV[a + 1])
    a = a + 2
  end
  redis.call('EXPIREAT', KEYS[k], exp)
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', ARGV[3])
return -1
"""


@dataclass
class Piece:
    """One agent process's batches lo..hi counted into a flush (its events' counts kept apart, so
    that Redis can refuse them whole if another brain stored any of them)."""

    lo: int
    hi: int
    counts: dict[int, Counter[str]] = field(default_factory=dict)
    events: int = 0


@dataclass
class FlushBatch:
    """Counts taken from memory for one write: minute → encoded flow → count, and the rest."""

    seq: int = 0
    counts: dict[int, Counter[str]] = field(default_factory=dict)
    lost: Counter[int] = field(default_factory=Counter)
    recent: list[str] = field(default_factory=list)
    events: int = 0  # events in `counts`
    entries: int = 0  # distinct (minute, flow) pairs in `counts`
    by_node: Counter[str] = field(default_factory=Counter)  # entries, by the node that made them
    refused: Counter[tuple[int, str, str]] = field(default_factory=Counter)  # (minute, node, reason)
    # counts of numbered agent batches, per (node, instance): stored only if no brain stored them
    pieces: dict[tuple[str, str], Piece] = field(default_factory=dict)

    def empty(self) -> bool:
        return not (self.counts or self.lost or self.recent or self.refused or self.pieces)

    def all_counts(self) -> list[dict[int, Counter[str]]]:
        """The unnumbered counts and every piece's."""
        return [self.counts, *(p.counts for p in self.pieces.values())]


def _text(v: Any) -> str:
    return v.decode() if isinstance(v, bytes) else str(v)


_PLAIN = re.compile(r"[A-Za-z0-9._/:-]*")


def record_text(value: str) -> str:
    """A free-form value (e.g. a policy name) made safe for a record: every character that could
    be a delimiter (``|``, ``,``, a newline) or is no plain name character is %-quoted."""
    return value if _PLAIN.fullmatch(value) else urllib.parse.quote(value, safe="/:")


class RedisStore:
    def __init__(
        self,
        client: RedisClient,
        *,
        prefix: str = DEFAULT_PREFIX,
        retention: int = DEFAULT_RETENTION,
        recent_max_events: int = 100_000,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.retention = retention
        self.recent_max_entries = max(1, recent_max_events // CHUNK)

    def minute_key(self, minute: int) -> str:
        return f"{self.prefix}:m:{minute}"

    def lost_key(self, minute: int) -> str:
        return f"{self.prefix}:lost:{minute}"

    def refused_key(self, minute: int) -> str:
        return f"{self.prefix}:refused:{minute}"

    @property
    def recent_key(self) -> str:
        return f"{self.prefix}:recent"

    def flushed_key(self, writer: str) -> str:
        return f"{self.prefix}:flushed:{writer}"

    def seq_key(self, node: str, instance: str) -> str:
        return f"{self.prefix}:seq:{node}/{instance}"

    def expiry(self, minute: int) -> int:
        return (minute + 1) * 60 + self.retention

    async def write(self, batch: FlushBatch, writer: str) -> dict[tuple[str, str], int]:
        """Apply a batch as one transaction (all of it or none), recording its number. Returns the
        pieces Redis refused: (node, instance) → the batch number stored for it."""
        async with self.client.pipeline(transaction=True) as p:
            order = list(batch.pieces.items())
            for (node, instance), piece in order:
                keys = [self.seq_key(node, instance)]
                args: list[Any] = [piece.lo, piece.hi, self.retention]
                for minute, fields in piece.counts.items():
                    keys.append(self.minute_key(minute))
                    args += (self.expiry(minute), len(fields))
                    for f, n in fields.items():
                        args += (f, n)
                p.eval(_PIECE, len(keys), *keys, *args)
            for minute, fields in batch.counts.items():
                margs: list[Any] = [self.expiry(minute)]
                for f, n in fields.items():
                    margs += (f, n)
                p.eval(_HINCRBY_MANY, 1, self.minute_key(minute), *margs)
            refused: dict[int, list[Any]] = {}
            for (minute, node, reason), n in batch.refused.items():
                refused.setdefault(minute, []).extend((f"{node}|{reason}", n))
            for minute, args in refused.items():
                p.eval(_HINCRBY_MANY, 1, self.refused_key(minute), self.expiry(minute), *args)
            for minute, n in batch.lost.items():
                p.incrby(self.lost_key(minute), n)
                p.expireat(self.lost_key(minute), self.expiry(minute))
            for i in range(0, len(batch.recent), CHUNK):
                chunk = batch.recent[i : i + CHUNK]
                p.xadd(self.recent_key, {"e": "\n".join(chunk)}, maxlen=self.recent_max_entries, approximate=True)
            if batch.recent:
                p.expire(self.recent_key, self.retention)
            p.set(self.flushed_key(writer), batch.seq, ex=self.retention)
            replies = await p.execute()
        return {key: int(r) for (key, _), r in zip(order, replies, strict=False) if int(r) >= 0}

    async def stored_seqs(self, keys: Sequence[tuple[str, str]]) -> list[int]:
        """The batch number stored for each (node, instance) (0: none)."""
        if not keys:
            return []
        vals = await self.client.mget([self.seq_key(n, i) for n, i in keys])
        return [int(v) if v is not None else 0 for v in vals]

    async def refused_pieces(self, batch: FlushBatch) -> dict[tuple[str, str], int]:
        """For a batch already applied whose reply was lost: which of its pieces Redis refused
        (a piece added left its record at >= its hi; the record never goes down)."""
        keys = list(batch.pieces)
        stored = await self.stored_seqs(keys)
        return {k: r for k, r in zip(keys, stored, strict=True) if r < batch.pieces[k].hi}

    async def ping(self) -> None:
        await self.client.ping()

    async def applied(self, writer: str, seq: int) -> bool:
        """Whether flush ``seq`` of ``writer`` is in Redis (flushes apply in order)."""
        v = await self.client.get(self.flushed_key(writer))
        return v is not None and int(v) >= seq

    # --- queries (what the admin API serves) ---

    async def minute_hashes(self, minutes: Sequence[int]) -> list[dict[str, int]]:
        async with self.client.pipeline(transaction=False) as p:
            for m in minutes:
                p.hgetall(self.minute_key(m))
            raw = await p.execute()
        return [{_text(k): int(v) for k, v in h.items()} for h in raw]

    async def top_flows(
        self,
        window: str | int,
        group_by: Sequence[str],
        *,
        limit: int = 10,
        where: Mapping[str, str] | None = None,
        now: float,
        policy_of: flows.PolicyOf | None = None,
    ) -> list[dict[str, object]]:
        """The ``limit`` biggest groups of blocked attempts in the window ending at ``now``.

        ``group_by`` is any subset of `flows.GROUP_FIELDS` (empty: one group, the total);
        ``policy_of`` names NetworkPolicy drops by policy (see `flows.group_counts`)."""
        keys = flows.check_group_by(group_by)
        hashes = await self.minute_hashes(flows.window_buckets(window, now))
        return flows.top(flows.group_counts(hashes, keys, where, policy_of), keys, limit)

    async def top(self, window: str, group_by: list[str], limit: int) -> list[dict[str, Any]]:
        """`top_flows` ending now: the admin API's `DropsSource`."""
        return await self.top_flows(window, group_by, limit=limit, now=time.time())

    async def lost(self, window: str | int, *, now: float) -> int:
        """Events of the window shed while Redis was away (the counts' known shortfall)."""
        minutes = flows.window_buckets(window, now)
        vals = await self.client.mget([self.lost_key(m) for m in minutes])
        return sum(int(v) for v in vals if v is not None)

    async def refused(self, window: str | int, *, now: float) -> list[dict[str, Any]]:
        """Events refused per node and reason over the window, most first:
        ``[{"node": ..., "reason": "quota", "count": n}, ...]``."""
        minutes = flows.window_buckets(window, now)
        async with self.client.pipeline(transaction=False) as p:
            for m in minutes:
                p.hgetall(self.refused_key(m))
            raw = await p.execute()
        total: Counter[tuple[str, str]] = Counter()
        for h in raw:
            for k, v in h.items():
                node, sep, reason = _text(k).rpartition("|")
                if sep:
                    total[(node, reason)] += int(v)
        ranked = sorted(total.items(), key=lambda kv: (-kv[1], kv[0]))
        return [{"node": node, "reason": reason, "count": n} for (node, reason), n in ranked]

    async def refused_by_node(self, window: str) -> list[dict[str, Any]]:
        """`refused` ending now: what the admin API's ``TopDrops`` reports next to the flows."""
        return await self.refused(window, now=time.time())

    async def recent_events(
        self, where: Mapping[str, str] | None = None, *, limit: int = 100, scan_entries: int | None = None
    ) -> list[dict[str, str]]:
        """The newest events (newest first) whose record fields equal ``where``'s values, e.g.
        ``{"dst_namespace": "prod", "direction": "ingress", "dport": "80"}``. A ``namespace`` or
        ``pod`` key matches either side (source or destination)."""
        where = dict(where or {})
        ns = where.pop("namespace", None)
        pod = where.pop("pod", None)
        unknown = [k for k in where if k not in RECORD_FIELDS]
        if unknown:
            raise ValueError(f"cannot filter on {', '.join(unknown)}; fields are namespace, pod, "
                             f"{', '.join(RECORD_FIELDS)}")  # fmt: skip
        out: list[dict[str, str]] = []
        budget = scan_entries if scan_entries is not None else self.recent_max_entries + 16
        max_id = "+"
        while len(out) < limit and budget > 0:
            page = await self.client.xrevrange(self.recent_key, max=max_id, min="-", count=min(64, budget))
            if not page:
                break
            for _entry_id, data in page:
                d = data or {}
                body = _text(d.get(b"e") or d.get("e") or b"")  # bytes, or str with decode_responses
                for line in reversed(body.split("\n")):
                    rec = dict(zip(RECORD_FIELDS, line.split("|"), strict=False))
                    if "%" in rec.get("policies", ""):
                        rec["policies"] = ",".join(urllib.parse.unquote(p) for p in rec["policies"].split(","))
                    if ns is not None and ns not in (rec.get("src_namespace"), rec.get("dst_namespace")):
                        continue
                    if pod is not None and pod not in (rec.get("src_pod"), rec.get("dst_pod")):
                        continue
                    if flows.matches(rec, where):
                        out.append(rec)
                        if len(out) >= limit:
                            return out
            budget -= len(page)
            max_id = "(" + _text(page[-1][0])  # exclusive: continue below the oldest entry seen
        return out
