"""Shared state in Redis, for a fleet of bots on several machines.

The same interface and semantics as the JSON file store. Each state is one
JSON document under ``<prefix>:state:<name>``, changed by a WATCH/MULTI/EXEC
transaction: when another worker changes the document in between, the
transaction is retried on the new document, so no update is lost. The
previous document is kept under ``...:bak`` for recovery, audit records go to
a capped stream ``<prefix>:audit:<name>``.

Every change is published on ``<prefix>:changes`` with the new document. A
listener thread keeps the revision and the document per state from those
messages, so ``version()`` costs no round trip, a guard's once-a-second
refresh reads only what changed, and a guard cut off right after a notice
still knows what it announced.

When Redis is unreachable the store serves the last state it saw, applies
changes in memory, queues only those safe to re-apply later (``replay=True``:
failure counts, freezes, newest-wins balances; not resets or unfreezes, which
may be stale by then) and reports itself degraded. The listener reconnects
with exponential backoff, replays the queue and bumps every version, so each
guard re-reads the fleet's state.
"""

from __future__ import annotations

import contextlib
import copy
import json
import threading
import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping
from typing import Any, TypeVar
from urllib.parse import urlsplit

import backoff

from broker_guard.clock import Clock, system_clock, utc_iso
from broker_guard.config import STORE_PREFIX_PATTERN
from broker_guard.errors import ConfigError, StoreError, StoreLockTimeoutError
from broker_guard.redact import logger as redact_logger
from broker_guard.redact import redact, register_secrets
from broker_guard.state.base import (
    MAX_PENDING,
    SCHEMA_VERSION,
    Cursor,
    Mutation,
    StoreHealth,
    parse_document,
)
from broker_guard.state.records import Change, RecordPath, Records

try:
    import redis
    import redis.backoff
    import redis.retry
except ImportError:  # the optional extra is not installed: RedisStore() says how to get it
    redis = None  # type: ignore[assignment]

log = redact_logger("broker_guard.store.redis")

T = TypeVar("T")
MAX_CONFLICTS = 100  # transaction retries when other workers keep changing the same document
POLL_SECONDS = 0.1  # how long the listener waits for a message before it looks at its flags
_BAD_DOCUMENT = (ValueError, UnicodeDecodeError)
_UNREACHABLE: tuple[type[BaseException], ...] = (
    (redis.ConnectionError, redis.TimeoutError, OSError) if redis is not None else (OSError,)
)


class RedisStore:
    """State documents, audit streams and change notices in one Redis database, under ``prefix``.

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
        self._channel = f"{prefix}:changes"
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._memory: dict[str, dict[str, Any]] = {}  # last document seen or written, per state
        self._memory_revision: dict[str, int] = {}
        # newest revision known, per state (from pub/sub, reads, writes)
        self._revisions: dict[str, int] = {}
        self._epoch = 0  # bumped on every (re)subscription: messages may have been missed before it
        self._pending: dict[str, list[Mutation[Any]]] = {}
        self._not_replayed = 0
        self._lines: dict[str, list[dict[str, Any]]] = {}  # audit records Redis did not take
        self._recovered: list[str] = []
        self._down: str | None = None  # why Redis is unusable; None while it works
        self._stop = threading.Event()
        self._resync = threading.Event()  # a command failed: the listener reconnects and replays
        self._thread = threading.Thread(
            target=self._listen, name=f"broker-guard-redis:{prefix}", daemon=True
        )
        self._thread.start()

    # -- interface ---------------------------------------------------------------------------

    def read(self, name: str) -> dict[str, Any]:
        """The server's document (one GET; a guard reads only after a change notice), or while Redis
        is down the last one seen."""
        if self._down is not None and self._degrade_allowed:
            return self._memory_copy(name)
        try:
            data, revision = self._fetch(name)
        except _UNREACHABLE as exc:
            self._unreachable(exc)
            return self._memory_copy(name)
        except redis.RedisError as exc:
            raise StoreError(
                f"Redis store {self.location} refused to read {name!r}: {exc}", cause=exc
            ) from exc
        self._remember(name, data, revision)
        return copy.deepcopy(data)

    def load(self, name: str) -> tuple[Cursor, Records]:
        """The document and the cursor it is as of (the listener's revision)."""
        cursor = self._cursor(name)
        return cursor, self.read(name)

    def changes(self, name: str, since: Cursor) -> tuple[Cursor, list[Change]] | None:
        """Nothing when no notice came since ``since``; else None: the document is read again
        (each state is still one document here, so a reader reads all of it)."""
        cursor = self._cursor(name)
        return (cursor, []) if cursor == since else None

    def _cursor(self, name: str) -> Cursor:
        return (self._epoch, self._revisions.get(name, 0))

    def update(
        self,
        name: str,
        mutate: Mutation[T],
        *,
        keys: Iterable[RecordPath] | None = None,
        replay: bool = True,
        urgent: bool = False,
    ) -> tuple[dict[str, Any], T]:
        """Apply ``mutate`` to the current document in one transaction and publish the change.

        ``keys`` is accepted for the store interface; the whole document is handed over. While
        Redis is unreachable the change applies to this process's copy; ``replay=False`` marks a
        change not to re-apply on reconnect.
        """
        with self._lock:
            if self._down is not None and self._degrade_allowed:
                return self._update_in_memory(name, mutate, replay)
            try:
                data, results = self._transact(name, [mutate])
            except _UNREACHABLE as exc:
                self._unreachable(exc)
                return self._update_in_memory(name, mutate, replay)
            # e.g. out of memory, read-only replica: nothing was written
            except redis.RedisError as exc:
                raise StoreError(
                    f"Redis store {self.location} refused to write {name!r}: {exc}", cause=exc
                ) from exc
            return copy.deepcopy(data), results[0]

    def version(self, name: str) -> Hashable:
        """A token that changes when any worker changes ``name``: no round trip, kept by the
        listener."""
        return (self._epoch, self._revisions.get(name, 0))

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
        records: list[dict[str, Any]] = []
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
                records.append(value)
        with self._lock:
            return records + list(self._lines.get(name, []))

    def health(self) -> StoreHealth:
        with self._lock:
            degraded: dict[str, str] = {}
            if self._down is not None:
                queued = sum(len(p) for p in self._pending.values())
                degraded["redis"] = f"{self._down}; {queued} change(s) queued for replay"
            return StoreHealth(
                ok=not degraded,
                degraded=degraded,
                recovered=list(self._recovered),
                location=self.location,
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

    # -- internals ---------------------------------------------------------------------------

    def _key(self, name: str) -> str:
        return f"{self.prefix}:state:{name}"

    def _transact(
        self, name: str, mutations: list[Mutation[Any]]
    ) -> tuple[dict[str, Any], list[Any]]:
        """WATCH the document, apply ``mutations`` to a fresh copy, write it back in MULTI/EXEC;
        retry on a conflict."""
        key = self._key(name)
        ttl = self._ttl_ms.get(name)
        with self._client.pipeline(transaction=True) as pipe:
            for _attempt in range(MAX_CONFLICTS):
                try:
                    pipe.watch(key)  # type: ignore[no-untyped-call]
                    raw = pipe.get(key)
                    try:
                        data, revision = self._decode(name, raw) if raw is not None else ({}, 0)
                    except _BAD_DOCUMENT as exc:
                        pipe.reset()
                        self._recover(name, exc)
                        continue
                    results = [mutate(data) for mutate in mutations]
                    revision += 1
                    payload = self._encode(data, revision)
                    pipe.multi()
                    pipe.set(key, payload, px=ttl)
                    if raw is not None:
                        pipe.set(f"{key}:bak", raw, px=ttl)
                    pipe.publish(self._channel, f"{name} {revision} {payload}")
                    pipe.execute()
                except redis.WatchError:
                    continue
                self._remember(name, data, revision)
                return data, results
        raise StoreLockTimeoutError(
            f"state {name!r} at {self.location} changed under {MAX_CONFLICTS} attempts in a row; "
            "too many workers are writing it at once, or one is stuck in a loop"
        )

    def _fetch(self, name: str) -> tuple[dict[str, Any], int]:
        raw = self._client.get(self._key(name))
        try:
            return self._decode(name, raw) if raw is not None else ({}, 0)
        except _BAD_DOCUMENT as exc:
            return self._recover(name, exc)

    def _decode(self, name: str, raw: bytes | str) -> tuple[dict[str, Any], int]:
        try:
            doc = parse_document(raw)
        except ValueError as exc:
            raise ValueError(f"{self._key(name)}: {exc}") from exc
        revision = doc.get("revision")
        if not isinstance(revision, int):
            raise ValueError(f"{self._key(name)} has no revision ({revision!r})")
        return doc["data"], revision

    def _encode(self, data: dict[str, Any], revision: int) -> str:
        doc = {
            "schema_version": SCHEMA_VERSION,
            "revision": revision,
            "updated_at": utc_iso(self._clock()),
            "data": data,
        }
        return json.dumps(doc, sort_keys=True, default=str)

    def _recover(self, name: str, problem: Exception) -> tuple[dict[str, Any], int]:
        """A damaged document is renamed aside and the previous good one put back, as the file store
        does."""
        key = self._key(name)
        aside = f"{key}:corrupt-{int(time.time() * 1000)}"
        bak = self._client.get(f"{key}:bak")
        try:
            data, revision = self._decode(name, bak) if bak is not None else ({}, 0)
            source = "the last good copy"
        except _BAD_DOCUMENT:
            data, revision, source = {}, 0, "empty state (no good copy)"
        payload = self._encode(data, revision + 1)
        with self._client.pipeline(transaction=True) as pipe:
            pipe.rename(key, aside)
            pipe.set(key, payload, px=self._ttl_ms.get(name))
            pipe.publish(self._channel, f"{name} {revision + 1} {payload}")
            pipe.execute()
        log.critical(
            "state %s was corrupt (%s); renamed to %s and restored from %s. Check whatever wrote "
            "it.",
            key,
            problem,
            aside,
            source,
        )
        with self._lock:
            self._recovered.append(key)
        return data, revision + 1

    def _update_in_memory(
        self, name: str, mutate: Mutation[T], replay: bool
    ) -> tuple[dict[str, Any], T]:
        data = self._memory_copy(name)
        result = mutate(data)
        self._memory[name] = data
        # readers here see the change (a reconnect starts a new epoch: everyone reads again)
        self._revisions[name] = self._revisions.get(name, 0) + 1
        pending = self._pending.setdefault(name, [])
        if replay and len(pending) < MAX_PENDING:
            pending.append(mutate)
        else:
            self._not_replayed += 1
        return copy.deepcopy(data), result

    def _remember(self, name: str, data: dict[str, Any], revision: int) -> None:
        """Keep the newest document seen; while Redis is down memory holds this process's own
        changes, which
        a notice read late from the socket must not overwrite (the reconnect re-fetches
        everything)."""
        with self._lock:
            if self._down is None and revision >= self._memory_revision.get(name, 0):
                self._memory[name] = data
                self._memory_revision[name] = revision
            self._note(name, revision)

    def _memory_copy(self, name: str) -> dict[str, Any]:
        with self._lock:
            return copy.deepcopy(self._memory.get(name, {}))

    def _note(self, name: str, revision: int) -> None:
        if revision > self._revisions.get(name, 0):
            self._revisions[name] = revision
            self._changed.notify_all()

    def _unreachable(self, exc: BaseException) -> None:
        """Note the outage once, loudly; the listener reconnects and replays. Raises when degrading
        is off."""
        with self._lock:
            if self._down is None:
                log.error(
                    "Redis store %s unreachable (%s): serving the last known state from memory, "
                    "queueing changes "
                    "that are safe to replay. Trading goes on; the store reconnects by itself.",
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
        """Subscribed: replay what is queued, refresh what this process holds, and bump every
        version."""
        with self._lock:
            replayed = 0
            for name in list(self._pending):
                mutations = self._pending[name]
                self._transact(name, [_dropping_on_error(name, m) for m in mutations])
                replayed += len(mutations)
                del self._pending[name]
            if self._down is not None:
                log.warning(
                    "Redis store %s reachable again: %d change(s) replayed, %d kept in this "
                    "process only "
                    "(resets and unfreezes are not replayed: the fleet's state moved on)",
                    self.location,
                    replayed,
                    self._not_replayed,
                )
            # notices may have been missed, and a restarted server may count revisions from 1 again:
            # fetch every state this process holds now, before anyone trades on it (a link that
            # flaps again a moment later must not leave a freeze made meanwhile unknown)
            fetched = {name: self._fetch(name) for name in list(self._memory)}
            self._memory_revision.clear()
            self._revisions.clear()
            for name, (data, revision) in fetched.items():
                self._memory[name], self._memory_revision[name], self._revisions[name] = (
                    data,
                    revision,
                    revision,
                )
            self._down = None
            self._not_replayed = 0
            self._epoch += 1
            self._changed.notify_all()

    def _on_message(self, message: bytes) -> None:
        """``<name> <revision> <document>``: the new document itself, so a guard cut off right after
        a notice still knows what it announced (a freeze must not be lost between notice and
        read)."""
        name, _, rest = message.decode("utf-8", "replace").partition(" ")
        revision, _, payload = rest.partition(" ")
        if not name or not revision.isdigit():
            return
        try:
            data, _ = self._decode(name, payload)
        except _BAD_DOCUMENT:  # a notice without a usable document: the next read fetches it
            with self._lock:
                self._note(name, int(revision))
            return
        self._remember(name, data, int(revision))

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
