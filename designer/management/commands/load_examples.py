"""`manage.py load_examples [--publish]`: the example workflows of examples/*.json in the database.

Idempotent: an example that is already stored unchanged is left alone, a changed one gets a new
version, so `manage.py up` can run it on every start without piling up versions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError

from designer import services
from designer.models import Workflow
from orchestrator.spec import InvalidDefinition

EXAMPLES_DIR = Path(settings.BASE_DIR) / "examples"


@dataclass
class Outcome:
    slug: str
    action: str  # created, updated, unchanged, kept (edited by a person), skipped (archived), invalid
    version: int | None = None
    published: bool = False
    detail: str = ""


def read_examples(directory: Path = EXAMPLES_DIR) -> list[tuple[Path, dict]]:
    """Every example file with its parsed definition, in name order; CommandError on bad JSON."""
    examples = []
    for path in sorted(Path(directory).glob("*.json")):
        try:
            examples.append((path, json.loads(path.read_text())))
        except (OSError, json.JSONDecodeError) as exc:
            raise CommandError(f"{path}: not readable JSON ({exc})") from exc
    return examples


# Versions written by this loader carry this message prefix; any other latest version means a
# person edited the example in Sluice, and their work is kept rather than overwritten.
CREATED_MESSAGE = "Example from examples/"
UPDATED_MESSAGE = "Updated from examples/"


def _written_by_loader(version) -> bool:
    return version.message.startswith((CREATED_MESSAGE, UPDATED_MESSAGE))


def load_examples(directory: Path = EXAMPLES_DIR, publish: bool = False, user=None) -> list[Outcome]:
    """Create or update the example workflows (and publish what changed, if asked).

    Safe to run on every start: unchanged examples are left alone, examples edited in Sluice
    since they were loaded are kept as they are, archived ones are skipped.
    """
    outcomes = []
    for path, definition in read_examples(directory):
        slug = definition.get("slug") if isinstance(definition, dict) else None
        workflow = Workflow.objects.filter(slug=slug).first() if isinstance(slug, str) else None
        try:
            if workflow is None:
                version = services.create_workflow(definition, user, message=f"{CREATED_MESSAGE}{path.name}")
                outcome = Outcome(slug, "created", version.number)
            elif workflow.archived:
                outcomes.append(Outcome(slug, "skipped", detail="archived"))
                continue
            else:
                latest = services.get_version(workflow)
                if latest.definition == definition:
                    outcome = Outcome(slug, "unchanged", latest.number)
                elif not _written_by_loader(latest):
                    outcome = Outcome(slug, "kept", latest.number, detail="edited in Sluice since it was loaded")
                else:
                    version = services.save_version(workflow, definition, user,
                                                    message=f"{UPDATED_MESSAGE}{path.name}")
                    outcome = Outcome(slug, "updated", version.number)
        except InvalidDefinition as exc:
            details = "; ".join(f"{p.path or '(definition)'}: {p.message}" for p in exc.problems)
            outcomes.append(Outcome(str(slug or path.name), "invalid", detail=details))
            continue
        if publish:
            workflow = Workflow.objects.get(slug=slug)
            # Publish what this call wrote, and examples never published; a person's choice of
            # live version (a rollback, say) is theirs to keep.
            if outcome.action in ("created", "updated") or workflow.live_version_id is None:
                services.publish(workflow, outcome.version, user)
                outcome.published = True
        outcomes.append(outcome)
    return outcomes


class Command(BaseCommand):
    help = "Create or update the example workflows from examples/*.json (idempotent)."

    def add_arguments(self, parser):
        parser.add_argument("--publish", action="store_true", help="Publish each example's latest version to Kafka")
        parser.add_argument("--user", help="Username to record as author and publisher")
        parser.add_argument("--dir", default=str(EXAMPLES_DIR), help="Directory of example JSON files")

    def handle(self, *args, publish, user, dir, **options):
        author = None
        if user:
            User = get_user_model()
            author = User.objects.filter(**{User.USERNAME_FIELD: user}).first()
            if author is None:
                raise CommandError(f"No user called '{user}'")
        try:
            outcomes = load_examples(Path(dir), publish=publish, user=author)
        except services.PublishFailed as exc:
            raise CommandError(str(exc)) from exc
        for outcome in outcomes:
            line = f"{outcome.slug}: {outcome.action}"
            if outcome.version:
                line += f" (version {outcome.version})"
            if outcome.published:
                line += ", published"
            if outcome.detail:
                line += f": {outcome.detail}"
            self.stdout.write(line)
        invalid = [o.slug for o in outcomes if o.action == "invalid"]
        if invalid:
            raise CommandError(f"invalid example definitions: {', '.join(invalid)}")
