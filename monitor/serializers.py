"""JSON shapes of runs, steps and dead letters in the REST API, and the bodies of their actions."""

from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from .models import DeadLetter, Run, StepRun


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


# Text without control characters (NUL cannot even be stored): what the schema says, and checks.
PRINTABLE = r"^[^\u0000-\u001f]*$"


class CancelRequestSerializer(serializers.Serializer):
    reason = serializers.RegexField(PRINTABLE, required=False, allow_blank=True, max_length=500, default="")


class SignalRequestSerializer(serializers.Serializer):
    name = serializers.RegexField(PRINTABLE, min_length=1, max_length=200,
                                  help_text="Signal name, e.g. the approval step's signal")
    payload = serializers.JSONField(required=False, default=None, allow_null=True)


class AcceptedSerializer(serializers.Serializer):
    id = serializers.CharField()
    accepted = serializers.CharField(help_text="The command sent: cancel, retry, retry_with_input or signal")


class DeadLetterSerializer(serializers.ModelSerializer):
    """A dead letter in a list: where it failed and why, without its value."""

    class Meta:
        model = DeadLetter
        fields = ["id", "workflow", "stage", "error", "source_topic", "source_partition", "source_offset", "key",
                  "failed_at", "status", "resolved_by", "resolved_at"]
        read_only_fields = fields


class DeadLetterDetailSerializer(DeadLetterSerializer):
    """A dead letter with its value (text; "base64:..." when it is not UTF-8), headers and replay outcome."""

    headers = serializers.DictField(child=serializers.CharField(), read_only=True)
    replay = serializers.SerializerMethodField()

    class Meta(DeadLetterSerializer.Meta):
        fields = DeadLetterSerializer.Meta.fields + ["value", "headers", "topic", "partition", "offset", "replay"]
        read_only_fields = fields

    @extend_schema_field({"type": "object", "nullable": True, "properties": {
        "to": {"type": "string", "enum": ["trigger", "runs", "tasks"]},
        "started": {"type": "boolean"}, "run_id": {"type": "string"}, "topic": {"type": "string"},
        "partition": {"type": "integer"}, "offset": {"type": "integer"}, "edited": {"type": "boolean"},
        "detail": {"type": "string"}}})
    def get_replay(self, letter):
        return letter.replay


class DeadLetterReplayRequestSerializer(serializers.Serializer):
    value = serializers.JSONField(
        required=False, allow_null=True,
        help_text="The edited record value; omitted or null: replay it unchanged. A string is sent as its text, "
                  "anything else as JSON.")


class RetryRequestSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, help_text="Start a new run of the same version with this input "
                                                            "instead of resuming the run")


class RetryAcceptedSerializer(AcceptedSerializer):
    new_run = serializers.CharField(required=False, help_text="With input: the id of the new run")
    url = serializers.CharField(required=False, help_text="With input: the new run's API address")
