from rest_framework import serializers

from levqor.serializer_fields import StrictCharField

from workflows.models import Workflow, WorkflowRun


class WorkflowSerializer(serializers.ModelSerializer):
    name = StrictCharField(max_length=200)
    definition = serializers.JSONField(required=False)

    class Meta:
        model = Workflow
        fields = ["id", "name", "description", "definition", "enabled", "created_by", "created_at", "updated_at"]
        read_only_fields = ["id", "created_by", "created_at", "updated_at"]

    def validate_definition(self, value):
        if not isinstance(value, dict):
            raise serializers.ValidationError("definition must be a JSON object")
        return value


class WorkflowRunSerializer(serializers.ModelSerializer):
    class Meta:
        model = WorkflowRun
        fields = ["id", "workflow", "status", "triggered_by", "input", "result", "created_at", "finished_at"]
        read_only_fields = fields


class RunInputSerializer(serializers.Serializer):
    input = serializers.DictField(required=False)
