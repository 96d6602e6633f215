"""`manage.py issue_token USERNAME [--rotate]`: print the user's REST API token."""

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from rest_framework.authtoken.models import Token


def issue_token(username: str, rotate: bool = False) -> Token:
    """The user's API token, created if they have none; a fresh key (old one invalid) with rotate."""
    User = get_user_model()
    try:
        user = User.objects.get(**{User.USERNAME_FIELD: username})
    except User.DoesNotExist:
        raise CommandError(f"No user called '{username}' (create one with `manage.py createsuperuser`)")
    if not user.is_active:
        raise CommandError(f"User '{username}' is inactive: an API token would not work")
    with transaction.atomic():
        if rotate:
            Token.objects.filter(user=user).delete()
        token, _ = Token.objects.get_or_create(user=user)
    return token


class Command(BaseCommand):
    help = "Print USERNAME's REST API token (Authorization: Token <key>), creating it if needed."

    def add_arguments(self, parser):
        parser.add_argument("username")
        parser.add_argument("--rotate", action="store_true",
                            help="Replace the token with a new one; the old key stops working at once")

    def handle(self, *args, username, rotate, **options):
        token = issue_token(username, rotate=rotate)
        # Only the key on stdout, so `TOKEN=$(manage.py issue_token me)` works.
        self.stdout.write(token.key)
