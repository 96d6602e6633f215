"""`{{ value|as_json }}`: a stored JSON value shown as JSON (not Python's repr with its quotes)."""

import json

from django import template

register = template.Library()


@register.filter
def as_json(value) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
