"""The policy engine: one place that says yes or no, and why.

Inputs: the tenant's plan, the caller's role, the action (`resource:verb`, from the
`actions` catalog of policies.json) and optionally the resource. Output: a `Decision`
with a rationale a person can read. The order of the rules is the whole policy:

1. an action missing from the catalog is denied (default deny);
2. `default.deny` denies for every role (deny beats allow);
3. the role's `deny`, then its `allow` or `default.allow`; nothing matching is a deny;
4. the action's plan `feature`, when it names one, must be in the plan, or granted to
   the tenant on its own (`granted`: a marketplace module it bought).

Patterns are `resource:verb` with `*` wildcards (`workflows:*`, `*:read`, `*`).
To add an action: put it in `actions` (with `feature` if a plan gates it) and give it
to the roles that may take it; tests/policy/test_engine.py walks every combination.
"""
from __future__ import annotations

import json
import os
from dataclasses import dataclass
from fnmatch import fnmatchcase
from functools import lru_cache
from pathlib import Path

from django.core.exceptions import ImproperlyConfigured

POLICY_PATH = Path(os.environ.get("LEVQOR_POLICY_FILE", Path(__file__).with_name("policies.json")))
ROLES = ("owner", "admin", "operator", "auditor", "viewer")


class PolicyFileError(ImproperlyConfigured):
    pass


@dataclass(frozen=True)
class Decision:
    allowed: bool
    rationale: str
    action: str
    role: str
    plan: str

    def __bool__(self) -> bool:
        return self.allowed


def _require(condition: bool, where: str, reason: str) -> None:
    if not condition:
        raise PolicyFileError(f"{POLICY_PATH.name}: {where}: {reason}")


def _pattern_list(value, where: str) -> list[str]:
    _require(isinstance(value, list), where, "must be a list of action patterns")
    for i, item in enumerate(value):
        _require(isinstance(item, str) and item and (item == "*" or ":" in item), f"{where}[{i}]",
                 f"{item!r} is not an action pattern like 'workflows:*'")
    return value


def validate(data) -> dict:
    """Check the policy document's shape; raise PolicyFileError naming the place."""
    _require(isinstance(data, dict), "top level", "must be an object")
    for key in ("actions", "default", "roles", "plans"):
        _require(key in data, "top level", f"missing {key!r}")
    _require(isinstance(data["actions"], dict) and data["actions"], "actions", "must be a non-empty object")
    for name, spec in data["actions"].items():
        _require(":" in name and "*" not in name, f"actions.{name}", "action names are 'resource:verb' without wildcards")
        _require(isinstance(spec, dict), f"actions.{name}", "must be an object")
        unknown = set(spec) - {"feature", "metric"}
        _require(not unknown, f"actions.{name}", f"unknown keys {sorted(unknown)}")
    _pattern_list(data["default"].get("allow", []), "default.allow")
    _pattern_list(data["default"].get("deny", []), "default.deny")
    _require(isinstance(data["roles"], dict), "roles", "must be an object")
    for role in ROLES:
        _require(role in data["roles"], "roles", f"missing role {role!r}")
    for role, spec in data["roles"].items():
        _require(role in ROLES, f"roles.{role}", f"unknown role; roles are {', '.join(ROLES)}")
        _require(isinstance(spec, dict), f"roles.{role}", "must be an object")
        _pattern_list(spec.get("allow", []), f"roles.{role}.allow")
        _pattern_list(spec.get("deny", []), f"roles.{role}.deny")
    _require(isinstance(data["plans"], dict) and data["plans"], "plans", "must be a non-empty object")
    for plan, spec in data["plans"].items():
        _require(isinstance(spec, dict), f"plans.{plan}", "must be an object")
        limits = spec.get("limits")
        _require(isinstance(limits, dict), f"plans.{plan}.limits", "must be an object")
        for metric, value in limits.items():
            _require(isinstance(value, int) and not isinstance(value, bool) and value >= 0,
                     f"plans.{plan}.limits.{metric}", f"{value!r} is not a non-negative integer (write 100000, not 100k)")
        features = spec.get("features")
        _require(isinstance(features, list) and all(isinstance(f, str) for f in features),
                 f"plans.{plan}.features", "must be a list of feature names")
    return data


def load(path: Path | None = None) -> dict:
    path = path or POLICY_PATH
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise PolicyFileError(f"{Path(path).name}: cannot be read: {exc.strerror}") from exc
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise PolicyFileError(f"{Path(path).name}: line {exc.lineno}, column {exc.colno}: {exc.msg}") from exc
    return validate(data)


class Policy:
    def __init__(self, data: dict):
        self.data = data
        self.actions: dict = data["actions"]
        self.plans: dict = data["plans"]
        self._cache: dict[tuple[str, str, str], Decision] = {}

    def decide(self, *, plan: str, role: str, action: str, granted: frozenset = frozenset()) -> Decision:
        key = (plan, role, action, granted) if granted else (plan, role, action)
        decision = self._cache.get(key)
        if decision is None:
            decision = self._cache[key] = self._decide(plan, role, action, granted)
        return decision

    def _decide(self, plan: str, role: str, action: str, granted: frozenset = frozenset()) -> Decision:
        def deny(why: str) -> Decision:
            return Decision(False, why, action, role, plan)

        spec = self.actions.get(action)
        if spec is None:
            return deny(f"unknown action {action}")
        default = self.data["default"]
        if _matches(default.get("deny", []), action):
            return deny(f"{action} is denied to every tenant role")
        role_spec = self.data["roles"].get(role)
        if role_spec is None:
            return deny(f"unknown role {role}")
        if _matches(role_spec.get("deny", []), action):
            return deny(f"role {role} is denied {action}")
        if not (_matches(role_spec.get("allow", []), action) or _matches(default.get("allow", []), action)):
            return deny(f"role {role} lacks {action}")
        plan_spec = self.plans.get(plan)
        if plan_spec is None:
            return deny(f"unknown plan {plan}")
        feature = spec.get("feature")
        if feature and feature not in plan_spec["features"] and feature not in granted:
            return deny(f"plan {plan} lacks feature {feature}")
        return Decision(True, f"role {role} may {action} on plan {plan}", action, role, plan)


def _matches(patterns: list[str], action: str) -> bool:
    return any(pattern == action or fnmatchcase(action, pattern) for pattern in patterns)


def metric_for(action: str) -> str | None:
    """The metered counter an action consumes, if any (e.g. runs:create -> jobs)."""
    return get_policy().actions.get(action, {}).get("metric")


@lru_cache(maxsize=1)
def get_policy() -> Policy:
    return Policy(load())


def decide(*, plan: str, role: str, action: str, granted: frozenset = frozenset()) -> Decision:
    return get_policy().decide(plan=plan, role=role, action=action, granted=granted)
