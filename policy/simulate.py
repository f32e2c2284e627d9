"""What-if: the decisions and limits a plan or role change would flip, before it is made."""
from __future__ import annotations

from policy.engine import ROLES, get_policy
from policy.plans import plan_limits


def simulate(*, plan: str, to_plan: str | None = None, role: str | None = None, to_role: str | None = None) -> dict:
    policy = get_policy()
    to_plan = to_plan or plan
    pairs = [(role, to_role or role)] if role else [(r, to_role or r) for r in ROLES]
    flips = []
    for action in policy.actions:
        for before_role, after_role in pairs:
            before = policy.decide(plan=plan, role=before_role, action=action)
            after = policy.decide(plan=to_plan, role=after_role, action=action)
            if before.allowed != after.allowed:
                flips.append({
                    "action": action, "role": before_role, "to_role": after_role,
                    "before": "allow" if before.allowed else "deny", "after": "allow" if after.allowed else "deny",
                    # why it is denied on the side where it is denied
                    "rationale": after.rationale if not after.allowed else before.rationale,
                })
    limits_before, limits_after = plan_limits(plan), plan_limits(to_plan)
    limits = {metric: {"before": limits_before.get(metric), "after": limits_after.get(metric)}
              for metric in sorted(set(limits_before) | set(limits_after))
              if limits_before.get(metric) != limits_after.get(metric)}
    return {"plan": plan, "to_plan": to_plan, "flips": flips, "limits": limits}
