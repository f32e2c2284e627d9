"""Packs a marketplace module installs into the buying tenant's own tables.

A pack is a named set of workflow templates, written into the tenant's schema (or
database) when its order is paid, and removed when the module is refunded or canceled
(workflows a member already made from a template are the tenant's and stay). Unlike the
baseline packs of provisioning (`tenants.provisioning.register_pack`), these go to the
tenants that bought them only. To add one: a name and its templates in PACKS; a listing
then names it in `packs`.

Both functions run inside the tenant's context (the caller enters it) and are idempotent,
so a redelivered webhook or a retried task changes nothing the second time.
"""
from __future__ import annotations

from django.db import transaction

from tenants.context import tenant_db

PACKS: dict[str, list[dict]] = {
    "crm-sync": [
        {"name": "CRM: sync new contacts", "definition": {"trigger": "crm.contact.created",
                                                          "steps": [{"type": "crm.upsert_contact"}]}},
        {"name": "CRM: nightly deal report", "definition": {"schedule": "0 3 * * *",
                                                            "steps": [{"type": "crm.deals_report"}]}},
    ],
    "finance-close": [
        {"name": "Finance: month-end close checklist", "definition": {"schedule": "0 6 1 * *",
                                                                      "steps": [{"type": "finance.close"}]}},
    ],
    "slack-alerts": [
        {"name": "Slack: alert on failed run", "definition": {"trigger": "run.failed",
                                                              "steps": [{"type": "slack.post"}]}},
    ],
}


def pack_name(name: str) -> str:
    """The `pack` column value: marketplace packs are told apart from baseline ones."""
    return f"marketplace:{name}"


def install(name: str) -> int:
    """Write the pack's templates into the current tenant; returns how many were new."""
    from workflows.models import WorkflowTemplate

    created = 0
    with transaction.atomic(using=tenant_db()):
        for template in PACKS[name]:
            _, made = WorkflowTemplate.objects.get_or_create(
                pack=pack_name(name), name=template["name"], defaults={"definition": template["definition"]})
            created += made
    return created


def uninstall(name: str) -> int:
    """Remove the pack's templates from the current tenant; returns how many went."""
    from workflows.models import WorkflowTemplate

    with transaction.atomic(using=tenant_db()):
        deleted, _ = WorkflowTemplate.objects.filter(pack=pack_name(name)).delete()
    return deleted


def installed(name: str) -> int:
    from workflows.models import WorkflowTemplate

    return WorkflowTemplate.objects.filter(pack=pack_name(name)).count()
