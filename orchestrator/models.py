"""Orchestrator-owned records in the web database (definitions and runs live in designer/monitor)."""

from django.db import models


class WebhookEndpoint(models.Model):
    """The secret that lets outside systems start runs of one workflow by webhook.

    Only a SHA-256 digest of the token is stored: tokens are 256-bit random strings, so a fast
    hash is enough, and a leaked database does not leak working tokens. The plain token is
    shown once, when it is issued or rotated.
    """

    slug = models.SlugField(max_length=100, unique=True)
    token_hash = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)
    rotated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self):
        return f"webhook {self.slug}"
