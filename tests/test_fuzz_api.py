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
    a, key_a = make_tenant(plan="enterprise")
    b, key_b = make_tenant(plan="enterprise")
    secret = "b-private-workflow-7f3a"
    assert client_for(key_b, b).post("/api/workflows", {"name": secret}, format="json").status_code == 201
    wf_a = client_for(key_a, a).post("/api/workflows", {"name": "a-workflow"}, format="json").json()["id"]
    failures, tried = [], []

    for operation in _operations():
        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=True,
                  suppress_health_check=list(HealthCheck))
        def run(case):
            params = dict(case.path_parameters or {})
            if "tenant_id" in params:
                params["tenant_id"] = b.id if operation.path in SELF_ENDING else a.id
            if "id" in params and operation.path.startswith("/api/workflows") and mode == GenerationMode.POSITIVE:
                params["id"] = wf_a
            path = operation.path
            for name, value in params.items():
                path = path.replace("{" + name + "}", quote(str(value), safe=""))
            client = client_for(key_a, a)
            kwargs = {"QUERY_STRING": urlencode({k: v for k, v in (case.query or {}).items()}, doseq=True)}
            body = getattr(case, "body", None)
            if body is not None and type(body).__name__ == "NotSet":
                body = None
            try:
                payload = json.dumps(body) if body is not None and not isinstance(body, (bytes, str)) else body
            except (TypeError, ValueError):
                payload = None
            response = client.generic(case.method.upper(), path, payload or "", content_type="application/json", **kwargs)
            text = response.content.decode(errors="replace") if not getattr(response, "streaming", False) else ""
            if response.status_code >= 500:
                failures.append(f"{case.method} {path} -> {response.status_code}")
            if secret in text or f'"slug": "{b.slug}"' in text:
                failures.append(f"{case.method} {path} leaked tenant B's data")

        try:
            run()
        except Unsatisfiable:  # nothing invalid can be generated for this operation
            continue
        tried.append(f"{operation.method.upper()} {operation.path}")
    assert failures == [], failures[:10]
    assert len(tried) >= (20 if mode == GenerationMode.POSITIVE else 5), tried


@pytest.fixture
def settings_override(settings):
    settings.LEVQOR_SIGNUP_RATE = "100000/hour"
    settings.LEVQOR_OUTBOUND_ALLOW_HOSTS = []
    return settings
