"""`manage.py webhook_token SLUG [--rotate]`: issue (or rotate) a workflow's webhook token."""

from django.core.management.base import BaseCommand, CommandError

from monitor import workflows
from orchestrator.models import WebhookEndpoint
from triggers.webhooks import TOKEN_HEADER, issue_token


class Command(BaseCommand):
    help = "Print a new webhook token for a workflow (only its hash is stored, so it is shown once)."

    def add_arguments(self, parser):
        parser.add_argument("slug")
        parser.add_argument("--rotate", action="store_true",
                            help="replace an existing token (callers using the old one get 403)")

    def handle(self, *args, slug: str, rotate: bool, **options):
        if not workflows.workflows().filter(slug=slug).exists():
            raise CommandError(f"no workflow with slug '{slug}'")
        if WebhookEndpoint.objects.filter(slug=slug).exists() and not rotate:
            raise CommandError(f"'{slug}' already has a webhook token and only its hash is kept; "
                               f"pass --rotate to replace it (the old token stops working)")
        token = issue_token(slug)
        self.stdout.write(token)
        self.stderr.write(f"POST /hooks/{slug}/ with header {TOKEN_HEADER}: <token> (shown once; store it safely)")
