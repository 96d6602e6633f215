"""The form that edits a workflow's failure alerts, shared by the designer page and the admin.

The webhook URL is a credential (Slack's carry their secret in the path), so the form never
renders it: the field starts empty, shows the current URL's host as a hint, and an empty
answer keeps the stored URL ("remove" clears it).
"""

from __future__ import annotations

from django import forms
from django.core.exceptions import ValidationError
from django.core.validators import validate_email

from .alerts import describe_url
from .models import WorkflowAlerts


class AlertSettingsForm(forms.ModelForm):
    webhook_url = forms.URLField(
        required=False, max_length=2000, assume_scheme="https", label="Webhook URL",
        widget=forms.PasswordInput(render_value=False, attrs={"autocomplete": "off", "spellcheck": "false"}),
        help_text="An incoming-webhook URL (Slack, Mattermost, or anything that takes a JSON POST). "
                  "The body has Slack's \"text\" plus workflow, run_id, error and url.")
    remove_webhook = forms.BooleanField(required=False, label="Remove the webhook URL")
    email_to = forms.CharField(
        required=False, label="Email to", widget=forms.Textarea(attrs={"rows": 3, "spellcheck": "false"}),
        help_text="Addresses, one per line or separated by commas. Sent through the server's mail settings.")

    field_order = ["on_failure", "webhook_url", "remove_webhook", "email_to"]

    class Meta:
        model = WorkflowAlerts
        fields = ["on_failure", "webhook_url", "email_to"]
        labels = {"on_failure": "Notify when a run fails"}

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.stored_url = self.instance.webhook_url if self.instance and self.instance.pk else ""
        if self.stored_url:
            self.fields["webhook_url"].widget.attrs["placeholder"] = \
                f"{describe_url(self.stored_url)} is set; leave empty to keep it"
        else:
            self.fields["webhook_url"].widget.attrs["placeholder"] = "https://hooks.slack.com/services/…"
            self.fields["remove_webhook"].widget = forms.HiddenInput()

    def clean_webhook_url(self):
        url = self.cleaned_data.get("webhook_url") or ""
        if url and not url.lower().startswith(("http://", "https://")):
            raise ValidationError("The webhook URL must start with http:// or https://")
        return url

    def clean_email_to(self):
        addresses = [a.strip() for a in (self.cleaned_data.get("email_to") or "").replace("\n", ",").split(",")]
        addresses = [a for a in addresses if a]
        bad = []
        for address in addresses:
            try:
                validate_email(address)
            except ValidationError:
                bad.append(address)
        if bad:
            raise ValidationError(f"Not an email address: {', '.join(bad)}")
        return "\n".join(addresses)

    def clean(self):
        cleaned = super().clean()
        if self.cleaned_data.get("remove_webhook"):
            cleaned["webhook_url"] = ""
        elif not cleaned.get("webhook_url"):
            cleaned["webhook_url"] = self.stored_url
        if cleaned.get("on_failure") and not cleaned.get("webhook_url") and not cleaned.get("email_to"):
            raise ValidationError("Name a webhook URL or an email address to notify, or turn notifications off.")
        return cleaned
