"""JSON shapes of workflows and versions in the REST API (responses and small request bodies).

Definitions themselves are not checked here: orchestrator.spec.validate is the one validator,
so the API, the editor and the CLI reject exactly the same documents with the same paths.
"""

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from . import services
from .models import Workflow, WorkflowVersion


def username(user) -> str | None:
    return user.get_username() if user is not None else None


class VersionSerializer(serializers.ModelSerializer):
    """One version, without its definition (lists, save and publish answers)."""

    slug = serializers.CharField(source="workflow.slug", read_only=True)
    name = serializers.SerializerMethodField()
    version = serializers.IntegerField(source="number", read_only=True)
    status = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()
    published_by = serializers.SerializerMethodField()

    class Meta:
        model = WorkflowVersion
        fields = ["slug", "name", "version", "status", "message", "created_by", "created_at",
                  "published_at", "published_by"]
        read_only_fields = fields

    def get_name(self, version) -> str:
        return version.definition.get("name") or version.workflow.slug

    @extend_schema_field(serializers.ChoiceField(choices=[services.DRAFT, services.LIVE, services.PUBLISHED]))
    def get_status(self, version) -> str:
        return services.version_status(version)

    def get_created_by(self, version) -> str | None:
        return username(version.created_by)

    def get_published_by(self, version) -> str | None:
        return username(version.published_by)


class VersionDetailSerializer(VersionSerializer):
    """One version with its full definition."""

    definition = serializers.JSONField(read_only=True)

    class Meta(VersionSerializer.Meta):
        fields = VersionSerializer.Meta.fields + ["definition"]
        read_only_fields = fields


class WorkflowSerializer(serializers.ModelSerializer):
    """A workflow in the list: which version is live, which is the newest."""

    live_version = serializers.SerializerMethodField()
    latest_version = serializers.SerializerMethodField()
    status = serializers.SerializerMethodField()
    created_by = serializers.SerializerMethodField()

    class Meta:
        model = Workflow
        fields = ["slug", "name", "description", "archived", "status", "live_version", "latest_version",
                  "trigger_paused", "created_by", "created_at", "updated_at"]
        read_only_fields = fields

    def _latest(self, workflow):
        # Annotated by the list query (one query for the page); computed otherwise.
        number = getattr(workflow, "latest_number", None)
        if number is None:
            latest = workflow.latest_version
            number = latest.number if latest else None
        return number

    def get_live_version(self, workflow) -> int | None:
        return workflow.live_version.number if workflow.live_version_id else None

    def get_latest_version(self, workflow) -> int | None:
        return self._latest(workflow)

    @extend_schema_field(serializers.ChoiceField(choices=["archived", "draft", "live", "changed"]))
    def get_status(self, workflow) -> str:
        """archived; draft (never published); live (latest is live); changed (newer drafts than live)."""
        if workflow.archived:
            return "archived"
        if not workflow.live_version_id:
            return "draft"
        return "live" if workflow.live_version.number == self._latest(workflow) else "changed"

    def get_created_by(self, workflow) -> str | None:
        return username(workflow.created_by)


class WorkflowDetailSerializer(WorkflowSerializer):
    """A workflow with its latest definition and how many versions it has."""

    definition = serializers.SerializerMethodField()
    versions_count = serializers.SerializerMethodField()

    class Meta(WorkflowSerializer.Meta):
        fields = WorkflowSerializer.Meta.fields + ["versions_count", "definition"]
        read_only_fields = fields

    @extend_schema_field(OpenApiTypes.OBJECT)
    def get_definition(self, workflow):
        latest = workflow.latest_version
        return latest.definition if latest else None

    def get_versions_count(self, workflow) -> int:
        return workflow.versions.count()


# ---- request bodies (documented for the OpenAPI schema; validated in designer/api.py) -----
# A definition's body is the definition's own JSON Schema (webbase/openapi.py).
class DuplicateRequestSerializer(serializers.Serializer):
    slug = serializers.SlugField(help_text="Slug of the new workflow")
    name = serializers.CharField(required=False, help_text="Its name; '<name> (copy)' when omitted")


class PublishRequestSerializer(serializers.Serializer):
    version = serializers.IntegerField(min_value=1, required=False, allow_null=True,
                                       help_text="Version to publish; the latest when omitted")


class StartRunRequestSerializer(serializers.Serializer):
    input = serializers.JSONField(required=False, help_text="The run's input (`trigger` in expressions); {} when omitted")


class TriggerStateSerializer(serializers.Serializer):
    """A workflow's trigger: paused or not (the answer of pause and resume)."""

    workflow = serializers.CharField()
    type = serializers.CharField(help_text="The live version's trigger type (the newest version's when none is live)")
    paused = serializers.BooleanField()
    paused_by = serializers.CharField(allow_null=True, help_text="Who paused or resumed it last")
    paused_at = serializers.DateTimeField(allow_null=True, help_text="When it was paused or resumed last")


class TriggerStatusSerializer(TriggerStateSerializer):
    """The trigger's state and, for a Kafka trigger, its backlog."""

    topic = serializers.CharField(allow_null=True)
    live = serializers.BooleanField()
    pausable = serializers.BooleanField(help_text="false for a manual trigger: nothing to pause")
    windowed = serializers.BooleanField()
    max_runs_per_second = serializers.FloatField(allow_null=True)
    lag = serializers.IntegerField(allow_null=True, help_text="Records on the topic the trigger has not read yet")
    lag_source = serializers.ChoiceField(choices=["broker", "runners"], allow_null=True,
                                         help_text="broker: the consumer group's committed offsets; runners: "
                                                   "their heartbeats (partitions not committed yet)")
    unread_partitions = serializers.IntegerField(help_text="Partitions the trigger has not committed yet")
    late_records = serializers.IntegerField(allow_null=True,
                                            help_text="Windowed triggers: records dropped as late, counted by the "
                                                      "runners since they started")
    error = serializers.CharField(allow_null=True)


class StartedRunSerializer(serializers.Serializer):
    id = serializers.CharField()
    workflow = serializers.CharField()
    version = serializers.IntegerField()
    status = serializers.CharField()
    url = serializers.CharField()
