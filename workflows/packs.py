"""Baseline packs installed into every new tenant (provisioning step 3)."""
from workflows.models import WorkflowTemplate

STARTER = [
    {"name": "Hello, Levqor", "definition": {"steps": [{"type": "log", "message": "Hello from your first workflow"}]}},
    {"name": "Nightly report", "definition": {"schedule": "0 2 * * *", "steps": [{"type": "report"}]}},
]


def install_starter_pack() -> None:
    for template in STARTER:
        WorkflowTemplate.objects.get_or_create(pack="starter", name=template["name"],
                                               defaults={"definition": template["definition"]})
