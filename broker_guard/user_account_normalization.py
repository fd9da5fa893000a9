"""Seed component: User Account Normalization, where the seed's imports look for it.

Scans every position of one account or many, closes positions below the
minimum size (default $7.50) and flags consolidation candidates; dry-run is
the default, as in the seed. The pass itself lives in
``broker_guard.liquidation.normalize``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from broker_guard.config import GuardConfig
from broker_guard.guarded import GuardedBroker
from broker_guard.liquidation.normalize import NormalizationPlan, normalize_accounts
from broker_guard.state.base import Store


def run_normalization_pass(
    broker: object | Mapping[str, object],
    minimum_position_usd: float | None = None,
    dry_run: bool = True,
    *,
    consolidation_threshold_usd: float | None = None,
    close_consolidation_candidates: bool | None = None,
    config: GuardConfig | None = None,
    store: Store | None = None,
) -> dict[str, Any]:
    """Normalise one broker or a mapping of account name to broker (seed API); dry-run by default.

    The result has the seed's keys in total (``actions_required``,
    ``actions_executed``, ``total_value_cleaned``...) and per account under ``accounts``.
    """
    base = config or GuardConfig.load()
    plan = NormalizationPlan.resolve(
        base,
        minimum_position_usd,
        consolidation_threshold_usd,
        close_consolidation_candidates,
    )
    checked = plan.applied_to(base)
    brokers: Mapping[str, object] = broker if isinstance(broker, Mapping) else {"": broker}
    accounts = {}
    for name, one in brokers.items():
        account_config = checked.replace(guard={"account": name}) if name else checked
        guard = (
            one
            if isinstance(one, GuardedBroker)
            else GuardedBroker(one, account_config, store=store)
        )
        accounts[name or guard.account] = guard.guard_context
    return normalize_accounts(accounts, plan, dry_run)


__all__ = ["run_normalization_pass"]
