"""Which store a configuration names: JSON files in ``data_dir`` by default, or Redis for a
fleet."""

from __future__ import annotations

from broker_guard.clock import Clock, system_clock
from broker_guard.config import GuardConfig
from broker_guard.state.base import Store
from broker_guard.state.files import JsonFileStore


def store_from_config(
    config: GuardConfig, *, clock: Clock = system_clock, degrade: bool = True
) -> Store:
    """The store ``guard.store_url`` names: JSON files in ``data_dir`` by default, or Redis for a
    fleet.

    ``degrade=False`` (the CLI): an unreachable Redis or an unwritable disk is an error, not a
    switch to memory.
    """
    url = config.guard.store_url
    if url is None:
        return JsonFileStore(
            config.data_dir,
            lock_timeout=config.guard.lock_timeout_seconds,
            clock=clock,
            degrade=degrade,
        )
    from broker_guard.state.redis_store import RedisStore  # only now: redis is an optional extra

    ttl_hours = config.guard.balance_ttl_hours
    return RedisStore(
        url,
        prefix=config.guard.store_prefix,
        ttl_seconds={"balances": ttl_hours * 3600} if ttl_hours else None,
        audit_max_records=config.guard.audit_max_records,
        degrade=degrade,
        clock=clock,
    )
