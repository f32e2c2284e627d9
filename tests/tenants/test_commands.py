"""Staff management commands: the same services as the API."""
from io import StringIO

import pytest
from django.core.management import CommandError, call_command

from tenants.models import Tenant
from tests.conftest import client_for, unique_slug


def _run(*args) -> str:
    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


@pytest.mark.django_db
def test_create_platform_key_prints_a_working_key_on_its_last_line(make_tenant):
    key = _run("create_platform_key", "--name", "ops-bot").strip().splitlines()[-1]
    tenant, _ = make_tenant()
    assert client_for(key).get(f"/api/tenants/{tenant.id}").json()["slug"] == tenant.slug
    with pytest.raises(CommandError, match="name_taken"):
        _run("create_platform_key", "--name", "ops-bot")


@pytest.mark.django_db
def test_tenant_lifecycle_commands():
    slug = unique_slug("cli")
    out = _run("create_tenant", slug, "--name", "Cli Co", "--plan", "pro", "--admin-email", "a@cli.test")
    key = out.strip().splitlines()[-1].split()[-1]
    assert client_for(key, slug).get("/api/workflows").status_code == 200
    assert "suspended" in _run("suspend_tenant", slug)
    assert client_for(key, slug).get("/api/workflows").status_code == 403
    assert "active" in _run("resume_tenant", slug)
    new_key = _run("rotate_keys", slug).strip().splitlines()[-1]
    assert client_for(key, slug).get("/api/workflows").status_code == 401
    assert client_for(new_key, slug).get("/api/workflows").status_code == 200
    assert "plan enterprise" in _run("change_plan", slug, "enterprise")
    assert "deleting" in _run("delete_tenant", slug)
    assert Tenant.objects.get(slug=slug).status == "deleting"
    with pytest.raises(CommandError, match="invalid_input"):
        _run("create_tenant", "Bad Slug", "--name", "x")
    with pytest.raises(CommandError, match="no tenant"):
        _run("suspend_tenant", "no-such-tenant")
