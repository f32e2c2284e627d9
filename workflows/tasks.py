from tenants.tasks_base import tenant_task
from workflows import services
from workflows.models import Workflow


@tenant_task(name="workflows.tasks.run_workflow")
def run_workflow(workflow_id: str, actor: str = "system:schedule") -> str:
    """Run a workflow in the background (scheduled runs); returns the run id."""
    run = services.workflow_run(workflow=Workflow.objects.get(pk=workflow_id), actor=actor)
    return str(run.id)
