"""Shared state in Redis, for a fleet of bots on several machines.

The same interface and semantics as the journal file store, one record per
hash field, so one change costs the same whatever the state's size:

- ``<prefix>:rec:<name>``: a hash, one field per record, named by its path as
  JSON (``["frozen","SIG"]``), holding the record as JSON;
- ``<prefix>:meta:<name>``: ``seq`` (the state's sequence number), ``gen`` (a
  token that changes only when the state is created anew), ``schema_version``,
  ``updated_at``;
- ``<prefix>:log:<name>``: a stream of the newest changes, entry ``<seq>-0``;
- ``<prefix>:changes``: a channel; every change is published as
  ``<name> <gen> <seq> <change list>`` by the same script that makes it.

A change is one Lua script: it checks that the records the change was computed
from are still what they were (compare-and-set on those fields only, so
writers of different symbols never conflict), writes the changed fields, bumps
``seq``, logs and publishes the change. A listener thread applies the notices
to this process's copy of each state it follows, in sequence order (a gap is
filled from the log), so ``changes()`` and ``version()`` cost no round trip
and a guard cut off right after a notice still knows what it announced.

When Redis is unreachable the store serves the last state it saw, applies
changes in memory, queues only those safe to re-apply later (``replay=True``:
failure counts, freezes, newest-wins balances; not resets or unfreezes, which
may be stale by then) and reports itself degraded. The listener reconnects
with exponential backoff, replays the queue and starts a new epoch, so every
reader reads the fleet's state again. A state written by 0.1 (one JSON
document under ``<prefix>:state:<name>``) is migrated on first use and kept as
``...:v1-migrated``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit

import backoff

from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.config import STORE_PREFIX_PATTERN
from broker_guard.errors import ConfigError, StoreError, StoreLockTimeoutError
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state import journal, records
from broker_guard.state.base import MAX_PENDING, Cursor, Mutation, StoreHealth, parse_document
from broker_guard.state.records import Change, ChangeLog, RecordPath, Records

try:
    import redis
    import redis.backoff
    import redis.retry
except ImportError:  # the optional extra is not installed: RedisStore() says how to get it
    redis = None  # type: ignore[assignment]

log = redact_logger("broker_guard.store.redis")

T = TypeVar("T")
LAYOUT_VERSION = 2  # one hash field per record (0.1: one JSON document per state)
MAX_CONFLICTS = 100  # compare-and-set retries when other workers keep changing the same records
LOG_MAX = 10_000  # changes kept in each state's log stream, for readers that missed a notice
POLL_SECONDS = 0.1  # how long the listener waits for a message before it looks at its flags
ABSENT = ""  # in a script's arguments: the record is expected absent, or is deleted
_RAW_FIELD = "unreadable field "  # marks on a field whose name is not a record path: its bytes
_UNREACHABLE: tuple[type[BaseException], ...] = (
    (redis.ConnectionError, redis.TimeoutError, OSError) if redis is not None else (OSError,)
)

# KEYS: rec, meta, log. ARGV: channel, name, new gen, expected seq ('' = any), ttl ms ('' = none),
# log size, updated_at, change list, then a count and (field, expected raw) pairs, then a count
# and (field, new raw) pairs; '' as a raw value means absent / deleted.
# Returns {1, seq, gen} when written, {0, seq, gen} when a record (or seq) was not as expected.
_UPDATE = """
local rec, meta, log = KEYS[1], KEYS[2], KEYS[3]
local gen = redis.call('HGET', meta, 'gen')
if not gen then
  gen = ARGV[3]
  redis.call('DEL', log)
  redis.call('HSET', meta, 'gen', gen, 'seq', 0, 'schema_version', LAYOUT)
end
local seq = tonumber(redis.call('HGET', meta, 'seq'))
if not seq then return redis.error_reply('BADSEQ ' .. meta .. ' seq is not a number') end
if ARGV[4] ~= '' and tonumber(ARGV[4]) ~= seq then return {0, seq, gen} end
local i = 10
for _ = 1, tonumber(ARGV[9]) do
  local now = redis.call('HGET', rec, ARGV[i])
  if (now or '') ~= ARGV[i + 1] then return {0, seq, gen} end
  i = i + 2
end
seq = seq + 1
redis.call('HSET', meta, 'seq', seq, 'updated_at', ARGV[7])
local count = tonumber(ARGV[i])
i = i + 1
for _ = 1, count do
  if ARGV[i + 1] == '' then
    redis.call('HDEL', rec, ARGV[i])
  else
    redis.call('HSET', rec, ARGV[i], ARGV[i + 1])
  end
  i = i + 2
end
local id = string.format('%d-0', seq)
local added = redis.pcall('XADD', log, 'MAXLEN', '~', ARGV[6], id, 'set', ARGV[8])
if type(added) == 'table' and added.err then  -- a log left from an older state: start it again
  redis.call('DEL', log)
  redis.call('XADD', log, 'MAXLEN', '~', ARGV[6], id, 'set', ARGV[8])
end
redis.call('PUBLISH', ARGV[1], ARGV[2] .. ' ' .. gen .. ' ' .. seq .. ' ' .. ARGV[8])
if ARGV[5] ~= '' then
  for _, key in ipairs(KEYS) do redis.call('PEXPIRE', key, ARGV[5]) end
end
return {1, seq, gen}
""".replace("LAYOUT", str(LAYOUT_VERSION))

# KEYS: rec, meta, 0.1 document. ARGV: gen, seq, updated_at, ttl ms, the document as read, then
# (field, raw) pairs. Installs the records unless the state exists already (another worker
# migrated it first) or the document changed since it was read (a 0.1 worker wrote it: try again).
_MIGRATE = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
if redis.call('GET', KEYS[3]) ~= ARGV[5] then return -1 end
for i = 6, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('HSET', KEYS[2], 'gen', ARGV[1], 'seq', ARGV[2], 'schema_version', LAYOUT,
  'updated_at', ARGV[3])
if redis.call('EXISTS', KEYS[3]) == 1 then
  redis.call('RENAME', KEYS[3], KEYS[3] .. ':v1-migrated')
end
if ARGV[4] ~= '' then
  redis.call('PEXPIRE', KEYS[1], ARGV[4])
  redis.call('PEXPIRE', KEYS[2], ARGV[4])
end
return 1
""".replace("LAYOUT", str(LAYOUT_VERSION))


@dataclass
class _Replica:
    """This process's copy of one state, kept current from notices in sequence order."""

    records: Records = field(default_factory=dict)
    gen: str | None = None
    seq: int = 0
    recent: ChangeLog = field(default_factory=ChangeLog)
    stale: bool = False  # a notice was missed and could not be filled: read it all again

    def follows(self, gen: str, seq: int) -> bool:
        """Whether the change ``(gen, seq)`` is the next one."""
        return seq == self.seq + 1 and self.gen in (None, gen)

    def take(self, gen: str | None, seq: int, changes: Sequence[tuple[RecordPath, Any]]) -> None:
        for path, value in changes:
            records.apply(self.records, path, copy.deepcopy(value))
            self.recent.add(seq, path, value)
        self.gen, self.seq = gen, seq


class RedisStore:
    """State records, audit streams and change notices in one Redis database, under ``prefix``.

    ``degrade=False`` (the CLI) raises ``StoreError`` when Redis is unreachable
    instead of working from memory: an operator's change must reach the fleet
    or fail loudly. ``ttl_seconds`` maps a state name to how long it lives
    after its last change (e.g. ``{"balances": 7 * 86400}``); freezes should
    never expire by themselves, so nothing has a TTL unless asked.
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "broker_guard",
        ttl_seconds: Mapping[str, float] | None = None,
        audit_max_records: int = 100_000,
        degrade: bool = True,
        socket_timeout: float = 1.0,
        max_retry_delay: float = 2.0,
        clock: Clock = system_clock,
    ) -> None:
        _check_settings(url, prefix, audit_max_records)
        self.url = url
        self.prefix = prefix
        self.location = f"{redact(url)} prefix {prefix}"
        self._ttl_ms = {name: int(seconds * 1000) for name, seconds in (ttl_seconds or {}).items()}
        self._audit_max = audit_max_records
        self._degrade_allowed = degrade
        self._max_retry_delay = max_retry_delay
        self._clock = clock
        self._secrets: set[str] = set()
        self.add_secrets(url_secrets(url))
        self._client = _connect(url, socket_timeout)
        self._update_script = self._client.register_script(_UPDATE)
        self._migrate_script = self._client.register_script(_MIGRATE)
        self._channel = f"{prefix}:changes"
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._replicas: dict[str, _Replica] = {}  # the states this process follows
        self._seen: dict[str, int] = {}  # newest sequence number noticed, per state
        self._epoch = 0  # bumped on every (re)subscription: notices may have been missed before it
        self._migrated: set[str] = set()
        self._pending: dict[str, list[tuple[Mutation[Any], list[RecordPath] | None]]] = {}
        self._not_replayed = 0
        self._lines: dict[str, list[dict[str, Any]]] = {}  # audit records Redis did not take
        self._recovered: list[str] = []
        self._quarantined: list[str] = []
        self._reported: set[tuple[str, bytes, bytes]] = set()
        self._old_writer: str | None = None
        self._down: str | None = None  # why Redis is unusable; None while it works
        self._stop = threading.Event()
        self._resync = threading.Event()  # a command failed: the listener reconnects and replays
        self._thread = threading.Thread(
            target=self._listen, name=f"broker-guard-redis:{prefix}", daemon=True
        )
        self._thread.start()

    # -- interface ---------------------------------------------------------------------------

    def read(self, name: str) -> Records:
        """The server's records (one round trip), or while Redis is down the last ones seen."""
        return self.load(name)[1]

    def load(self, name: str) -> tuple[Cursor, Records]:
        """All of ``name``'s records and the cursor they are as of; this process follows the state
        from then on."""
        with self._lock:
            if self._down is None or not self._degrade_allowed:
                try:
                    self._install(name, *self._fetch(name))
                except _UNREACHABLE as exc:
                    self._unreachable(exc)
                except redis.RedisError as exc:
                    raise StoreError(
                        f"Redis store {self.location} refused to read {name!r}: {exc}", cause=exc
                    ) from exc
            replica = self._replicas.setdefault(name, _Replica())
            return (self._epoch, replica.seq), copy.deepcopy(replica.records)

    def changes(self, name: str, since: Cursor) -> tuple[Cursor, list[Change]] | None:
        """What changed since ``since``, from the notices this process received: no round trip.
        None when the reader must load everything again (a new epoch, a missed notice)."""
        with self._lock:
            replica = self._replicas.get(name)
            if replica is None or replica.stale or since[0] != self._epoch:
                return None
            cursor = (self._epoch, replica.seq)
            if since[1] >= replica.seq:
                return cursor, []
            newer = replica.recent.since(since[1])
            return None if newer is None else (cursor, newer)

    def update(
        self,
        name: str,
        mutate: Mutation[T],
        *,
        keys: Iterable[RecordPath] | None = None,
        replay: bool = True,
        urgent: bool = False,
    ) -> tuple[Records, T]:
        """Apply ``mutate`` to the records at ``keys`` (all of them when None) and write what it
        changed in one script, retried when another worker changed those records in between.

        While Redis is unreachable the change applies to this process's copy; ``replay=False``
        marks a change not to re-apply on reconnect. ``urgent`` is accepted for the store
        interface: a write here never waits on a lock.
        """
        paths = None if keys is None else list(keys)
        with self._lock:
            if self._down is not None and self._degrade_allowed:
                return self._update_in_memory(name, mutate, paths, replay)
            try:
                return self._transact(name, mutate, paths)
            except _UNREACHABLE as exc:
                self._unreachable(exc)
                return self._update_in_memory(name, mutate, paths, replay)
            # e.g. out of memory, read-only replica, a damaged seq: nothing was written
            except redis.RedisError as exc:
                raise StoreError(
                    f"Redis store {self.location} refused to write {name!r}: {exc}", cause=exc
                ) from exc

    def version(self, name: str) -> Hashable:
        """A token that changes when any worker changes ``name``: no round trip, kept by the
        listener."""
        with self._lock:
            replica = self._replicas.get(name)
            seq = max(self._seen.get(name, 0), replica.seq if replica else 0)
            return (self._epoch, seq)

    def append(self, name: str, record: dict[str, Any]) -> None:
        """Add one audit record to the capped stream; ``StoreError`` when Redis does not take it."""
        line = json.dumps(record, default=str, sort_keys=True)
        try:
            self._client.xadd(
                f"{self.prefix}:audit:{name}",
                {"r": line},
                maxlen=self._audit_max,
                approximate=False,
            )
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            with self._lock:
                self._lines.setdefault(name, []).append(json.loads(line))
            raise StoreError(
                f"audit record not written to {self.location}: {exc}", cause=exc
            ) from exc

    def read_lines(self, name: str) -> list[dict[str, Any]]:
        """The audit stream, oldest first, then any records Redis did not take."""
        lines: list[dict[str, Any]] = []
        try:
            entries = self._client.xrange(f"{self.prefix}:audit:{name}")
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            entries = []
        for _id, fields in entries or []:
            try:
                value = json.loads((fields or {})[b"r"])
            except (KeyError, ValueError):
                continue
            if isinstance(value, dict):
                lines.append(value)
        with self._lock:
            return lines + list(self._lines.get(name, []))

    def health(self) -> StoreHealth:
        with self._lock:
            degraded: dict[str, str] = {}
            if self._down is not None:
                queued = sum(len(p) for p in self._pending.values())
                degraded["redis"] = f"{self._down}; {queued} change(s) queued for replay"
            if self._old_writer is not None:
                degraded["redis layout"] = self._old_writer
            return StoreHealth(
                ok=not degraded and not self._quarantined,
                degraded=degraded,
                recovered=list(self._recovered),
                location=self.location,
                quarantined=list(self._quarantined),
            )

    def add_secrets(self, secrets: Iterable[str]) -> None:
        self._secrets.update(s for s in secrets if s)
        register_secrets(self._secrets)

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Stop the listener and close the connections."""
        self._stop.set()
        if self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        self._client.close()

    def __enter__(self) -> RedisStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def wait_until(self, predicate: Callable[[RedisStore], bool], timeout: float = 10.0) -> bool:
        """Block until ``predicate(store)`` holds, woken by the listener: for tests and tools, never
        the hot path."""
        with self._changed:
            return self._changed.wait_for(lambda: predicate(self), timeout=timeout)

    # -- reading -----------------------------------------------------------------------------

    def _key(self, kind: str, name: str) -> str:
        return f"{self.prefix}:{kind}:{name}"

    def _fetch(self, name: str) -> tuple[str | None, int, Records]:
        """Every record of ``name`` with the state's generation and sequence number, read in one
        MULTI so they agree."""
        self._migrate(name)
        with self._client.pipeline(transaction=True) as pipe:
            pipe.hgetall(self._key("rec", name))
            pipe.hmget(self._key("meta", name), ["gen", "seq"])
            fields, (gen, seq) = pipe.execute()
        return _text(gen), self._seq_of(name, seq), self._records(name, fields.items())

    def _seq_of(self, name: str, raw: bytes | None) -> int:
        try:
            seq = int(raw or 0)
        except ValueError:
            seq = -1
        if seq < 0:
            raise StoreError(
                f"state {name!r} at {self.location} cannot be read: its sequence number "
                f"({raw!r:.40}) is damaged; entries stay refused until an operator repairs "
                f"{self._key('meta', name)}"
            )
        return seq

    def _records(self, name: str, fields: Iterable[tuple[bytes, bytes | None]]) -> Records:
        """The records the hash fields hold; a damaged one is quarantined and read as damaged, so
        its symbol stays blocked."""
        found: Records = {}
        for raw_field, raw in fields:
            if raw is None:
                continue
            try:
                path = _path_of(raw_field)
                value = journal.loads(raw)
                if value is None:  # no change writes null: it would read as deleted, a release
                    raise journal.BadLine("null record")
            except journal.BadLine as exc:
                self._quarantine(name, raw_field, raw, str(exc))
                path = _attributed(raw_field)
                value = {"quarantined": f"damaged record in Redis: {exc}"}
            records.apply(found, path, value)
        return found

    def _quarantine(self, name: str, raw_field: bytes, raw: bytes, problem: str) -> None:
        """Keep a damaged record aside for review (once per process), loudly."""
        with self._lock:
            if (name, raw_field, raw) in self._reported:
                return
            self._reported.add((name, raw_field, raw))
            what = f"{self._key('rec', name)} field {raw_field[:80]!r}"
            self._quarantined.append(f"{what}: {problem}")
        aside = self._key("quarantine", name)
        with contextlib.suppress(redis.RedisError):
            self._client.xadd(aside, {"field": raw_field, "value": raw, "problem": problem})
        log.critical(
            "state %s: a damaged record (%s) was copied to %s; the symbol it names is kept "
            "blocked for review (every symbol, when it names none). Check whatever wrote it.",
            what,
            problem,
            aside,
        )

    def _install(self, name: str, gen: str | None, seq: int, found: Records) -> None:
        """Take a full read unless this process already follows the state past it."""
        replica = self._replicas.get(name)
        if replica is not None and not replica.stale and replica.gen == gen and replica.seq >= seq:
            return
        if replica is not None and replica.gen not in (None, gen):
            self._recreated(name, replica, gen)
        fresh = self._replicas[name] = _Replica(found, gen, seq)
        fresh.recent.restart(seq)
        self._seen[name] = max(self._seen.get(name, 0), seq)

    def _recreated(self, name: str, replica: _Replica, gen: str | None) -> None:
        """The state was created anew on the server (deleted, or a server that lost its data):
        every reader reads it all again, and the operator is told what this process knew."""
        frozen = replica.records.get("frozen")
        log.critical(
            "state %s at %s was created anew (generation %s -> %s); this process knew %d record "
            "section(s)%s. If that was not an operator's reset, re-apply lost freezes.",
            name,
            self.location,
            replica.gen,
            gen,
            len(replica.records),
            f", frozen: {sorted(frozen)[:20]}" if isinstance(frozen, dict) and frozen else "",
        )
        self._epoch += 1
        self._seen.clear()

    # -- writing -----------------------------------------------------------------------------

    def _transact(
        self, name: str, mutate: Mutation[T], paths: list[RecordPath] | None
    ) -> tuple[Records, T]:
        """Read the records, apply ``mutate``, write what changed if those records are unchanged
        on the server; retry on a conflict."""
        self._migrate(name)  # a change replayed after an outage comes here first
        if name not in self._replicas:  # follow what this process writes: its copy serves an outage
            self._install(name, *self._fetch(name))
        for _attempt in range(MAX_CONFLICTS):
            before, expect_seq, checks = self._read_for_update(name, paths)
            doc = copy.deepcopy(before)
            result = mutate(doc)
            changed = flat_diff(before, doc)
            if not changed:
                return doc, result
            outcome = self._write(name, changed, expect_seq, checks)
            if outcome is not None:
                self._wrote(name, *outcome, changed)
                return doc, result
        raise StoreLockTimeoutError(
            f"records of {name!r} at {self.location} changed under {MAX_CONFLICTS} attempts in a "
            "row; too many workers are writing them at once, or one is stuck in a loop"
        )

    def _read_for_update(
        self, name: str, paths: list[RecordPath] | None
    ) -> tuple[Records, str, list[tuple[bytes, bytes]]]:
        """The records a change is computed from, and what the write must find unchanged: those
        fields (a keyed change), or the whole state's sequence number."""
        if paths is None:
            _gen, seq, found = self._fetch(name)
            return found, str(seq), []
        fields = [_field(path) for path in paths]
        raws = self._client.hmget(self._key("rec", name), fields) if fields else []
        found = self._records(name, zip(fields, raws, strict=True))
        return found, "", [(f, raw or b"") for f, raw in zip(fields, raws, strict=True)]

    def _write(
        self,
        name: str,
        changed: list[tuple[RecordPath, Any]],
        expect_seq: str,
        checks: list[tuple[bytes, bytes]],
    ) -> tuple[str, int] | None:
        """Run the update script; (gen, seq) written, or None on a conflict."""
        args: list[Any] = [
            self._channel,
            name,
            os.urandom(8).hex(),
            expect_seq,
            self._ttl_ms.get(name, ""),
            LOG_MAX,
            utc_iso(self._clock()),
            journal.dumps(journal.change_list(changed)),
            len(checks),
        ]
        for item in checks:
            args.extend(item)
        args.append(len(changed))
        for path, value in changed:
            args.extend((_field(path), ABSENT if value is None else journal.dumps(value)))
        keys = [self._key("rec", name), self._key("meta", name), self._key("log", name)]
        written, seq, gen = self._update_script(keys=keys, args=args)
        return (_text(gen) or "", int(seq)) if written else None

    def _wrote(
        self, name: str, gen: str, seq: int, changed: Sequence[tuple[RecordPath, Any]]
    ) -> None:
        """This process's own change, applied to its copy now (readers here see it at once),
        after any change of another worker it has not had the notice of yet."""
        self._seen[name] = max(self._seen.get(name, 0), seq)
        replica = self._replicas.get(name)
        if replica is None or replica.stale:
            return
        if replica.seq < seq - 1:
            self._catch_up(name, replica, gen, seq - 1)
        if replica.follows(gen, seq):
            replica.take(gen, seq, changed)
        else:
            replica.stale = True
        self._changed.notify_all()

    def _catch_up(self, name: str, replica: _Replica, gen: str, until: int) -> None:
        """Fill a gap in the notices from the state's log; stale when the log no longer has it."""
        try:
            entries = self._client.xrange(
                self._key("log", name), f"{replica.seq + 1}-0", f"{until}-0"
            )
            for entry_id, fields in entries:
                seq = int(entry_id.split(b"-")[0])
                if not replica.follows(gen, seq):
                    break
                replica.take(gen, seq, journal.read_changes(fields[b"set"]))
        except (redis.RedisError, journal.BadLine, KeyError, ValueError) as exc:
            log.warning("state %s: missed changes not read from its log (%s)", name, exc)
        if replica.seq < until:
            replica.stale = True

    def _update_in_memory(
        self, name: str, mutate: Mutation[T], paths: list[RecordPath] | None, replay: bool
    ) -> tuple[Records, T]:
        replica = self._replicas.setdefault(name, _Replica())
        before = replica.records if paths is None else records.select(replica.records, paths)
        doc = copy.deepcopy(before)
        result = mutate(doc)
        changed = flat_diff(before, doc)
        if changed:
            # readers here see the change (a reconnect starts a new epoch: everyone reads again)
            replica.take(replica.gen, replica.seq + 1, changed)
            pending = self._pending.setdefault(name, [])
            if replay and len(pending) < MAX_PENDING:
                pending.append((mutate, paths))
            else:
                self._not_replayed += 1
        return doc, result

    def _migrate(self, name: str) -> None:
        """Move a state 0.1 wrote (one JSON document) into records, once, whichever worker comes
        first."""
        if name in self._migrated:
            return
        old = self._key("state", name)
        for _attempt in range(MAX_CONFLICTS):  # a 0.1 worker writing meanwhile: read it again
            with self._client.pipeline(transaction=False) as pipe:
                pipe.exists(self._key("meta", name))
                pipe.get(old)
                pipe.get(f"{old}:bak")
                exists, raw, bak = pipe.execute()
            if exists or raw is None or self._migrate_document(name, raw, bak) != -1:
                break
        self._migrated.add(name)

    def _migrate_document(self, name: str, raw: bytes, bak: bytes | None) -> int:
        """1 when migrated, 0 when not (migrated already, or damaged), -1 when the document
        changed since it was read."""
        old = self._key("state", name)
        found = _document(raw)
        if found is None and bak is not None:
            found = _document(bak)
            self._recovered.append(f"{old} (from {old}:bak)")
        if found is None:
            self._quarantined.append(f"{old}: damaged 0.1 document, not migrated")
            log.critical("0.1 state %s is damaged and was not migrated; review it", old)
            return 0
        data, revision = found
        args: list[Any] = [os.urandom(8).hex(), revision, utc_iso(self._clock())]
        args.extend((self._ttl_ms.get(name, ""), raw))
        for path, value in flat_diff({}, data):
            args.extend((_field(path), journal.dumps(value)))
        keys = [self._key("rec", name), self._key("meta", name), old]
        outcome = int(self._migrate_script(keys=keys, args=args))
        if outcome == 1:
            log.warning("state %s migrated from the 0.1 layout (kept as %s:v1-migrated)", old, old)
        return outcome

    # -- notices and outages -----------------------------------------------------------------

    def _on_message(self, message: bytes) -> None:
        """``<name> <gen> <seq> <change list>``: applied to this process's copy in sequence
        order."""
        name, gen, seq_text, changes = [*message.split(b" ", 3), b"", b"", b""][:4]
        if not seq_text.isdigit():
            self._old_layout(name, gen)
            return
        seq = int(seq_text)
        with self._lock:
            if self._down is not None:
                return  # read late from the socket: the reconnect reads everything again
            state = name.decode("utf-8", "replace")
            self._seen[state] = max(self._seen.get(state, 0), seq)
            replica = self._replicas.get(state)
            if replica is not None and not replica.stale:
                self._take_notice(state, replica, gen.decode("ascii", "replace"), seq, changes)
            self._changed.notify_all()

    def _take_notice(self, name: str, replica: _Replica, gen: str, seq: int, raw: bytes) -> None:
        if replica.gen not in (None, gen):
            replica.stale = True
            self._recreated(name, replica, gen)
            return
        if seq <= replica.seq:
            return  # this process's own change, or one a catch-up already applied
        if seq > replica.seq + 1:
            self._catch_up(name, replica, gen, seq - 1)
        try:
            changes = journal.read_changes(raw)
        except journal.BadLine:
            changes = None
        if changes is None or not replica.follows(gen, seq):
            replica.stale = True
        else:
            replica.take(gen, seq, changes)

    def _old_layout(self, name: bytes, revision: bytes) -> None:
        """A notice in 0.1's format: a worker not yet upgraded writes a document nobody here
        reads."""
        if not revision.isdigit():
            return
        with self._lock:
            first = self._old_writer is None
            self._old_writer = (
                f"a worker running broker_guard 0.1 writes {name.decode('utf-8', 'replace')!r} "
                "in the old layout; its changes are not seen here. Upgrade every worker."
            )
        if first:
            log.critical("Redis store %s: %s", self.location, self._old_writer)

    def _unreachable(self, exc: BaseException) -> None:
        """Note the outage once, loudly; the listener reconnects and replays. Raises when degrading
        is off."""
        with self._lock:
            if self._down is None:
                log.error(
                    "Redis store %s unreachable (%s): serving the last known state from memory, "
                    "queueing changes that are safe to replay. Trading goes on; the store "
                    "reconnects by itself.",
                    self.location,
                    exc,
                )
                self._down = redact(
                    f"unreachable since {utc_iso(self._clock())}: {exc}", self._secrets
                )
                self._changed.notify_all()
            self._resync.set()
        if not self._degrade_allowed:
            raise StoreError(
                f"Redis store {self.location} is unreachable ({exc}); nothing was changed",
                cause=exc,
            ) from exc

    def _reconnected(self) -> None:
        """Subscribed: replay what is queued, read every state this process follows again, and
        start a new epoch (notices may have been missed, a restarted server may count from 1)."""
        with self._lock:
            replayed = 0
            for name in list(self._pending):
                for mutate, paths in self._pending[name]:
                    self._transact(name, _dropping_on_error(name, mutate), paths)
                    replayed += 1
                del self._pending[name]
            if self._down is not None:
                log.warning(
                    "Redis store %s reachable again: %d change(s) replayed, %d kept in this "
                    "process only (resets and unfreezes are not replayed: the fleet's state moved "
                    "on)",
                    self.location,
                    replayed,
                    self._not_replayed,
                )
            # before anyone trades on it: a link that flaps again a moment later must not leave a
            # freeze made meanwhile unknown
            self._seen.clear()
            for name in list(self._replicas):
                self._reread(name)
            self._down = None
            self._not_replayed = 0
            self._epoch += 1
            self._changed.notify_all()

    def _reread(self, name: str) -> None:
        """Read a followed state again after a reconnect; one that cannot be read is left stale
        (its readers' next load raises: entries refused) without stopping the others."""
        old = self._replicas[name]
        try:
            gen, seq, found = self._fetch(name)
        except StoreError as exc:
            log.critical("state %s unreadable after reconnecting: %s", name, exc)
            old.stale = True
            return
        if old.gen is not None and gen != old.gen:
            self._recreated(name, old, gen)
        fresh = self._replicas[name] = _Replica(found, gen, seq)
        fresh.recent.restart(seq)
        self._seen[name] = seq

    def _listen(self) -> None:
        """Subscribe, follow change notices, and on any failure reconnect with exponential
        backoff."""
        delays = _delays(self._max_retry_delay)
        while not self._stop.is_set():
            self._resync.clear()
            try:
                with self._client.pubsub() as pubsub:  # type: ignore[no-untyped-call]
                    pubsub.subscribe(self._channel)
                    for message in _messages(pubsub, self._stop, self._resync):
                        if message["type"] == "subscribe":
                            self._reconnected()
                            delays = _delays(self._max_retry_delay)
                        elif message["type"] == "message":
                            self._on_message(message["data"])
            except _UNREACHABLE as exc:
                if self._stop.is_set():
                    return
                # degrading is off: callers get the error, the listener reconnects
                with contextlib.suppress(StoreError):
                    self._unreachable(exc)
            # e.g. the replay kept conflicting: try again after a wait
            except (StoreError, redis.RedisError) as exc:
                log.error(
                    "Redis store %s: replay after reconnect failed (%s); retrying",
                    self.location,
                    exc,
                )
            self._stop.wait(next(delays))


def flat_diff(before: Mapping[str, Any], after: Mapping[str, Any]) -> list[tuple[RecordPath, Any]]:
    """The record changes (path, new value or None) that turn ``before`` into ``after``, one per
    hash field: a section's records each, a top-level value as one. Values are copies, as
    ``records.diff`` makes: the change log readers share must not be the caller's objects."""
    old, new = _flatten(before), _flatten(after)
    return [
        (p, copy.deepcopy(new.get(p)))
        for p in sorted(old.keys() | new.keys())
        if old.get(p) != new.get(p)
    ]


def _flatten(state: Mapping[str, Any]) -> dict[RecordPath, Any]:
    out: dict[RecordPath, Any] = {}
    for top, value in state.items():
        if isinstance(value, Mapping):
            out.update(((top, key), item) for key, item in value.items() if item is not None)
        elif value is not None:
            out[(top,)] = value
    return out


def _field(path: RecordPath) -> bytes:
    """The hash field of a record; a mark on an unreadable field names that field, so deleting
    the mark (an operator's acknowledgement) deletes it."""
    if path[0] == records.UNATTRIBUTED and path[-1].startswith(_RAW_FIELD):
        with contextlib.suppress(ValueError):
            return bytes.fromhex(path[-1][len(_RAW_FIELD) :])
    return journal.dumps(list(path)).encode("ascii")


def _path_of(raw_field: bytes) -> RecordPath:
    path = journal.loads(raw_field)
    if (
        not isinstance(path, list)
        or len(path) not in (1, 2)
        or not all(isinstance(p, str) for p in path)
    ):
        raise journal.BadLine(f"not a record path: {raw_field[:80]!r}")
    return tuple(path)


def _attributed(raw_field: bytes) -> RecordPath:
    """The record a damaged field is marked on: its own, or when its name is unreadable too, a
    mark that refuses every entry until an operator has reviewed it."""
    try:
        return _path_of(raw_field)
    except journal.BadLine:
        return (records.UNATTRIBUTED, _RAW_FIELD + raw_field.hex())


def _text(raw: bytes | str | None) -> str | None:
    return raw.decode("ascii", "replace") if isinstance(raw, bytes) else raw


def _document(raw: bytes) -> tuple[dict[str, Any], int] | None:
    """The data and revision of a 0.1 state document, or None when it is damaged."""
    try:
        doc = parse_document(raw)
    except ValueError:
        return None
    revision = doc.get("revision")
    return (doc["data"], revision) if isinstance(revision, int) and revision >= 0 else None


def _dropping_on_error(name: str, mutate: Mutation[Any]) -> Mutation[Any]:
    """A queued change that raises on replay is dropped, loudly, instead of blocking every later
    one."""

    def run(data: dict[str, Any]) -> Any:
        try:
            return mutate(data)
        except Exception:
            log.exception("a queued change to %s failed on replay and was dropped", name)
            return None

    return run


def _messages(
    pubsub: Any, stop: threading.Event, resync: threading.Event
) -> Iterator[dict[str, Any]]:
    while not stop.is_set() and not resync.is_set():
        message = pubsub.get_message(timeout=POLL_SECONDS)
        if message is not None:
            yield message


def _delays(max_value: float) -> Iterator[float]:
    """Reconnect waits from ``backoff``'s exponential generator: 0.05 s doubling up to
    ``max_value``."""
    gen = backoff.expo(base=2, factor=0.05, max_value=max_value)
    next(gen)  # the generator's priming step yields nothing
    return gen  # type: ignore[return-value]


def _check_settings(url: str, prefix: str, audit_max_records: int) -> None:
    if redis is None:
        raise ConfigError(
            "guard.store_url", redact(url), "the redis extra: pip install 'broker-guard[redis]'"
        )
    if not STORE_PREFIX_PATTERN.match(prefix):
        raise ConfigError(
            "guard.store_prefix", prefix, "1-64 characters of letters, digits and _ . : -"
        )
    if audit_max_records < 1:
        raise ConfigError("guard.audit_max_records", audit_max_records, "at least 1")


def _connect(url: str, socket_timeout: float) -> Any:
    try:
        return redis.Redis.from_url(
            url,
            socket_timeout=socket_timeout,
            socket_connect_timeout=socket_timeout,
            health_check_interval=10,
            # one immediate retry (a pooled connection left stale by a server restart), never a
            # backoff inside a trading call: an outage is handled by degrading, not by waiting
            retry=redis.retry.Retry(redis.backoff.NoBackoff(), 1),
        )
    except ValueError as exc:
        raise ConfigError(
            "guard.store_url", redact(url), f"a redis:// rediss:// or unix:// URL ({exc})"
        ) from None


def url_secrets(url: str) -> list[str]:
    """The password in a store URL, so no log line or state document ever carries it."""
    parts = urlsplit(url)
    return [parts.password] if parts.password else []
