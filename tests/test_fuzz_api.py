"""API fuzzing from the OpenAPI schema (schemathesis), with a valid tenant key of tenant A
while tenant B holds data: no 500s, and nothing of B's in any answer.

Bounded here (LEVQOR_FUZZ_EXAMPLES per operation and generation mode, default 15); run
longer by hand with e.g. LEVQOR_FUZZ_EXAMPLES=500 make test PYTEST_ARGS=tests/test_fuzz_api.py.
"""
import json
import os
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.modes import GenerationMode

from tenants import services
from tests.conftest import client_for

EXAMPLES = int(os.environ.get("LEVQOR_FUZZ_EXAMPLES", "15"))
# Operations that would end tenant A's own session (its key or the tenant itself) are
# fuzzed with tenant B's id instead, where they must be refused.
SELF_ENDING = ("/api/tenants/{tenant_id}/delete", "/api/tenants/{tenant_id}/rotate-keys")


def _schema():
    from drf_spectacular.generators import SchemaGenerator

    spec = json.loads(json.dumps(SchemaGenerator().get_schema(request=None, public=True), default=str))
    return schemathesis.openapi.from_dict(spec)


def _operations():
    return [result.ok() for result in _schema().get_all_operations()]


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE], ids=["valid", "invalid"])
def test_no_500_and_no_other_tenants_data(make_tenant, settings_override, mode):
    """Each tenant in turn is the caller (its own valid key) while the other holds data
    marked with a secret; no answer may be a 500 or carry the other's secret workflow name,
    slug or owner email."""
    tenants = [make_tenant(plan="enterprise") for _ in range(2)]
    for tenant, key in tenants:
        assert client_for(key, tenant).post("/api/workflows", {"name": f"private-{tenant.slug}-7f3a"},
                                            format="json").status_code == 201
    operations = _operations()
    failures, tried = [], set()
    for (caller, key), (other, _) in [(tenants[0], tenants[1]), (tenants[1], tenants[0])]:
        own_workflow = client_for(key, caller).post("/api/workflows", {"name": "mine"}, format="json").json()["id"]
        markers = (f"private-{other.slug}-7f3a", other.slug, f"owner@{other.slug}.test")
        current = [key]
        for operation in operations:
            if _fuzz(operation, mode, caller, current, other, own_workflow, markers, failures):
                tried.add(f"{operation.method.upper()} {operation.path}")
    assert failures == [], failures[:10]
    # The markers are findable in answers as the API writes them (compact JSON): each
    # tenant's own show up in its own answers.
    for tenant, _ in tenants:
        key = services.key_create_for_tenant(tenant=tenant, role="owner", name="check", actor="test")[1]
        own = client_for(key, tenant)
        assert f"private-{tenant.slug}-7f3a" in own.get("/api/workflows?limit=200").content.decode()
        assert tenant.slug in own.get("/api/org").content.decode()
    every = {f"{o.method.upper()} {o.path}" for o in operations}
    if mode == GenerationMode.POSITIVE:
        assert tried == every, sorted(every - tried)
    else:  # some operations have no invalid input to generate
        assert len(tried) >= len(every) // 4, sorted(tried)


def _fuzz(operation, mode, caller, key, other, own_workflow, markers, failures) -> bool:
    """Fuzz one operation as `caller`; False when nothing could be generated for it."""
    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
              suppress_health_check=list(HealthCheck))
    def run(case):
        params = dict(case.path_parameters or {})
        if "tenant_id" in params:
            params["tenant_id"] = other.id if operation.path in SELF_ENDING else caller.id
        if "id" in params and operation.path.startswith("/api/workflows") and mode == GenerationMode.POSITIVE:
            params["id"] = own_workflow
        path = operation.path
        for name, value in params.items():
            path = path.replace("{" + name + "}", quote(str(value), safe=""))
        kwargs = {"QUERY_STRING": urlencode({k: v for k, v in (case.query or {}).items()}, doseq=True)}
        body = getattr(case, "body", None)
        if body is not None and type(body).__name__ == "NotSet":
            body = None
        try:
            payload = json.dumps(body) if body is not None and not isinstance(body, (bytes, str)) else body
        except (TypeError, ValueError):
            payload = None
        response = client_for(key[0], caller).generic(case.method.upper(), path, payload or "",
                                                      content_type="application/json", **kwargs)
        if response.status_code == 401:
            # The example revoked the caller's own key (DELETE /api/org/keys/{id} with its
            # id): issue a new one, or every later operation would only meet a 401.
            key[0] = services.key_create_for_tenant(tenant=caller, role="owner", name="fuzz", actor="test")[1]
        text = response.content.decode(errors="replace") if not getattr(response, "streaming", False) else ""
        if response.status_code >= 500:
            failures.append(f"{caller.slug}: {case.method} {path} -> {response.status_code}")
        leaked = [m for m in markers if m in text]
        if leaked:
            failures.append(f"{caller.slug}: {case.method} {path} leaked {leaked} of {other.slug}")

    try:
        run()
    except Unsatisfiable:
        return False
    return True


@pytest.fixture
def settings_override(settings):
    settings.LEVQOR_SIGNUP_RATE = "100000/hour"
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = []
    return settings
