"""Plans, their limits and features: read from the policy file."""
from __future__ import annotations

from policy.engine import get_policy


def plan_names() -> list[str]:
    return list(get_policy().plans)


def is_plan(plan: str) -> bool:
    return plan in get_policy().plans


def plan_features(plan: str) -> list[str]:
    return list(get_policy().plans.get(plan, {}).get("features", []))


def plan_limits(plan: str) -> dict:
    return dict(get_policy().plans.get(plan, {}).get("limits", {}))


def plan_has(plan: str, feature: str) -> bool:
    return feature in plan_features(plan)
