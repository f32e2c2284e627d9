"""The decision table: every role x action x plan, against an expectation written out here
independently of policies.json, plus policy-file validation."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from policy import engine

ROLES = ("owner", "admin", "operator", "auditor", "viewer")
PLANS = ("core", "pro", "enterprise")
ALL_ACTIONS = [
    "tenant:read", "tenant:delete", "keys:read", "keys:create", "keys:revoke", "keys:rotate", "members:read",
    "members:invite", "members:update", "members:remove", "sso:read", "sso:configure", "plan:read", "plan:change",
    "limits:read", "limits:update", "backups:read", "backups:create", "backups:export", "backups:restore",
    "workflows:read", "workflows:write", "workflows:delete", "runs:read", "runs:create", "audit:read", "audit:export",
    "streams:read", "streams:configure", "evidence:read", "evidence:generate", "integrity:run", "usage:read",
    "metrics:read", "policy:simulate", "deploy:redeploy", "marketplace:read", "marketplace:order", "platform:manage",
    "federation:read", "federation:manage",
]
READS = {a for a in ALL_ACTIONS if a.endswith(":read")}
EXPECTED_ROLE_ALLOWS = {
    "owner": set(ALL_ACTIONS) - {"platform:manage"},
    "admin": set(ALL_ACTIONS) - {"platform:manage", "tenant:delete"},
    "operator": {"tenant:read", "workflows:read", "workflows:write", "workflows:delete", "runs:read", "runs:create",
                 "backups:read", "backups:create", "deploy:redeploy", "usage:read", "metrics:read", "members:read",
                 "plan:read", "limits:read", "marketplace:read", "federation:read"},
    "auditor": READS | {"audit:export", "evidence:generate", "integrity:run"},
    "viewer": {"tenant:read", "workflows:read", "runs:read", "usage:read", "metrics:read", "members:read", "plan:read",
               "limits:read", "marketplace:read", "federation:read"},
}
FEATURE_GATES = {"sso:configure": "sso", "streams:configure": "audit_stream", "marketplace:order": "marketplace"}
PLAN_FEATURES = {"core": {"marketplace"}, "pro": {"marketplace", "sso", "custom_domain"},
                 "enterprise": {"marketplace", "sso", "custom_domain", "audit_stream", "db_per_tenant", "dedicated_workers"}}


def test_catalog_is_the_expected_one():
    assert set(engine.get_policy().actions) == set(ALL_ACTIONS)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("role", ROLES)
def test_every_role_action_plan_decision(role, plan):
    for action in ALL_ACTIONS:
        decision = engine.decide(plan=plan, role=role, action=action)
        gate = FEATURE_GATES.get(action)
        expected = action in EXPECTED_ROLE_ALLOWS[role] and (gate is None or gate in PLAN_FEATURES[plan])
        assert decision.allowed is expected, (role, plan, action, decision.rationale)
        if not expected:
            if action not in EXPECTED_ROLE_ALLOWS[role]:
                assert role in decision.rationale or "every tenant role" in decision.rationale
            else:
                assert decision.rationale == f"plan {plan} lacks feature {gate}"


def test_rationales_read_like_the_spec():
    assert engine.decide(plan="core", role="viewer", action="workflows:write").rationale == "role viewer lacks workflows:write"
    assert engine.decide(plan="core", role="owner", action="sso:configure").rationale == "plan core lacks feature sso"
    assert engine.decide(plan="core", role="admin", action="tenant:delete").rationale == "role admin is denied tenant:delete"


def test_default_deny_for_unknown_actions_roles_and_plans():
    assert not engine.decide(plan="core", role="owner", action="workflows:launch_missiles")
    assert not engine.decide(plan="core", role="root", action="workflows:read")
    assert not engine.decide(plan="gold", role="owner", action="workflows:read")


def test_deny_beats_allow_and_wildcards_match():
    policy = engine.Policy(engine.validate({
        "actions": {"a:read": {}, "a:write": {}, "b:read": {}},
        "default": {"allow": [], "deny": ["b:*"]},
        "roles": {r: {"allow": ["*"], "deny": ["a:write"] if r == "viewer" else []} for r in ROLES},
        "plans": {"p": {"limits": {}, "features": []}},
    }))
    assert policy.decide(plan="p", role="viewer", action="a:read").allowed
    assert not policy.decide(plan="p", role="viewer", action="a:write").allowed
    assert not policy.decide(plan="p", role="owner", action="b:read").allowed  # default deny beats the owner's *


def test_plans_carry_the_spec_limits_as_integers():
    plans = engine.get_policy().plans
    assert plans["core"]["limits"]["api_calls"] == 100_000
    assert plans["pro"]["limits"]["api_calls"] == 1_000_000
    assert "db_per_tenant" in plans["enterprise"]["features"] and "db_per_tenant" not in plans["pro"]["features"]


def _broken(tmp_path, text: str) -> Path:
    path = tmp_path / "policies.json"
    path.write_text(text)
    return path


def test_syntax_error_names_the_line(tmp_path):
    good = Path(engine.POLICY_PATH).read_text().splitlines()
    good[5] = good[5] + " oops"
    with pytest.raises(engine.PolicyFileError, match="line 6"):
        engine.load(_broken(tmp_path, "\n".join(good)))


@pytest.mark.parametrize("mutate,reason", [
    (lambda d: d["plans"]["core"]["limits"].update(api_calls="100k"), "not a non-negative integer"),
    (lambda d: d["plans"]["core"]["limits"].update(api_calls=1e6), "not a non-negative integer"),
    (lambda d: d["roles"].pop("viewer"), "missing role 'viewer'"),
    (lambda d: d["roles"]["admin"].update(allow=["workflows"]), "not an action pattern"),
    (lambda d: d.pop("plans"), "missing 'plans'"),
    (lambda d: d["actions"].update({"x:*": {}}), "without wildcards"),
    (lambda d: d["plans"]["pro"].update(features="sso"), "list of feature names"),
])
def test_schema_errors_name_the_place(tmp_path, mutate, reason):
    data = json.loads(Path(engine.POLICY_PATH).read_text())
    mutate(data)
    with pytest.raises(engine.PolicyFileError, match=reason):
        engine.load(_broken(tmp_path, json.dumps(data)))


def test_a_broken_policy_file_stops_startup(tmp_path):
    path = _broken(tmp_path, '{"actions": {},\n "default": ')
    env = {**os.environ, "LEVQOR_POLICY_FILE": str(path), "DJANGO_DEBUG": "true"}
    result = subprocess.run([sys.executable, "manage.py", "check"], cwd=Path(__file__).resolve().parents[2], env=env,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode != 0
    assert "policies.json: line 2" in result.stderr
