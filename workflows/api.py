from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404
from rest_framework import mixins, status
from rest_framework.decorators import action
from rest_framework.response import Response

from policy.objects import authorize_run
from tenants.api_base import TenantViewSet
from tenants.context import current_tenant
from workflows import services
from workflows.models import Workflow
from workflows.serializers import RunInputSerializer, WorkflowRunSerializer, WorkflowSerializer


class WorkflowViewSet(mixins.ListModelMixin, mixins.RetrieveModelMixin, mixins.CreateModelMixin,
                      mixins.UpdateModelMixin, mixins.DestroyModelMixin, TenantViewSet):
    serializer_class = WorkflowSerializer
    http_method_names = ["get", "post", "patch", "delete", "head", "options"]
    policy_actions = {
        "list": "workflows:read", "retrieve": "workflows:read", "create": "workflows:write",
        "partial_update": "workflows:write", "destroy": "workflows:delete", "run": "runs:create",
        "runs": "runs:read",
    }

    def get_queryset(self):
        return Workflow.objects.all()

    def get_object(self):
        try:
            return super().get_object()
        except (DjangoValidationError, ValueError):  # not a UUID: no such workflow
            raise Http404

    def perform_create(self, serializer):
        serializer.instance = services.workflow_create(actor=self.request.principal.actor, **serializer.validated_data)

    def perform_update(self, serializer):
        serializer.instance = services.workflow_update(workflow=serializer.instance, actor=self.request.principal.actor,
                                                       **serializer.validated_data)

    def perform_destroy(self, instance):
        services.workflow_delete(workflow=instance, actor=self.request.principal.actor)

    @action(detail=True, methods=["post"])
    def run(self, request, pk=None):
        body = RunInputSerializer(data=request.data if isinstance(request.data, dict) else {"input": request.data})
        body.is_valid(raise_exception=True)
        workflow = self.get_object()
        authorize_run(principal=request.principal, ctx=current_tenant(), workflow=workflow, request=request)
        run = services.workflow_run(workflow=workflow, actor=request.principal.actor,
                                    input=body.validated_data.get("input"))
        return Response(WorkflowRunSerializer(run).data, status=status.HTTP_201_CREATED)

    @action(detail=True, methods=["get"])
    def runs(self, request, pk=None):
        workflow = self.get_object()
        page = self.paginate_queryset(workflow.runs.all())
        return self.get_paginated_response(WorkflowRunSerializer(page, many=True).data)
