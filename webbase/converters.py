"""A URL converter for names Sluice stored but did not make: any text, newlines and slashes too.

Slugs and run ids in the database passed whatever rules held when they were written; a page
listing them must still be able to link to them (Django's `slug`, `str` and `path` converters
refuse some of them: `path` is `.+`, which stops at a newline). Pages look the object up and
answer 404 or 403 as usual.
"""

from django.urls import register_converter


class AnyText:
    regex = r"[\s\S]+"

    def to_python(self, value: str) -> str:
        return value

    def to_url(self, value: str) -> str:
        return value


register_converter(AnyText, "any")
