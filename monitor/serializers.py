"""JSON shapes of runs and steps in the REST API, and the bodies of run actions."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import Run, StepRun


class StepRunSerializer(serializers.ModelSerializer):
    attempts = serializers.SerializerMethodField()

    class Meta:
        model = StepRun
        fields = ["step_id", "type", "status", "attempts", "output", "error", "port", "started_at", "ended_at"]
        read_only_fields = fields

    @extend_schema_field({"type": "array", "items": {"type": "object", "properties": {
        "attempt": {"type": "integer"}, "started_at": {"type": "string", "nullable": True},
        "ended_at": {"type": "string", "nullable": True}, "error": {"type": "string", "nullable": True},
        "backoff_seconds": {"type": "number", "nullable": True}}}})
    def get_attempts(self, step) -> list:
        # The projector stores attempts as it saw them; always answer with every documented key.
        keys = ("attempt", "started_at", "ended_at", "error", "backoff_seconds")
        return [{key: attempt.get(key) for key in keys} for attempt in step.attempts or [] if isinstance(attempt, dict)]


class RunSerializer(serializers.ModelSerializer):
    """A run in a list."""

    duration_seconds = serializers.FloatField(read_only=True, allow_null=True)

    class Meta:
        model = Run
        fields = ["id", "workflow", "version", "status", "trigger", "started_by", "error",
                  "created_at", "started_at", "ended_at", "duration_seconds"]
        read_only_fields = fields


class RunDetailSerializer(RunSerializer):
    """A run with its input, output and every step."""

    steps = StepRunSerializer(many=True, read_only=True)
    input = serializers.JSONField(read_only=True)
    output = serializers.JSONField(read_only=True)

    class Meta(RunSerializer.Meta):
        fields = ["id", "workflow", "version", "status", "input", "output", "error", "trigger", "started_by",
                  "created_at", "started_at", "ended_at", "duration_seconds", "steps"]
        read_only_fields = fields


class CancelRequestSerializer(serializers.Serializer):
    reason = serializers.CharField(required=False, allow_blank=True, max_length=500, default="")


class SignalRequestSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, help_text="Signal name, e.g. the approval step's signal")
    payload = serializers.JSONField(required=False, default=None, allow_null=True)


class AcceptedSerializer(serializers.Serializer):
    id = serializers.CharField()
    accepted = serializers.CharField(help_text="The command sent: cancel, retry, retry_with_input or signal")


class RetryRequestSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, help_text="Start a new run of the same version with this input "
                                                            "instead of resuming the run")


class RetryAcceptedSerializer(AcceptedSerializer):
    new_run = serializers.CharField(required=False, help_text="With input: the id of the new run")
    url = serializers.CharField(required=False, help_text="With input: the new run's API address")
