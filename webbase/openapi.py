"""What the OpenAPI document (/api/schema/) says beyond what drf-spectacular reads from the views.

The document must tell the truth (schemathesis checks it in the test suite): every status an
operation can answer is listed, paginated lists are documented as pages, request bodies refuse
the fields the views refuse, and a definition's body is the definition's own JSON Schema
(orchestrator.spec.definition_schema).
"""

from __future__ import annotations

from drf_spectacular.utils import OpenApiParameter, inline_serializer
from rest_framework import serializers

from orchestrator import spec

ERROR_REF = {"$ref": "#/components/schemas/Error"}
# Why each shared error status happens, on every operation that can answer it.
ERRORS = {
    "400": "The request is malformed: the body or a query parameter, named in `errors[].path`",
    "401": "Not signed in: send `Authorization: Token <key>` (or use a browser session)",
    "403": "Signed in, but without the right this operation needs",
    "404": "No such object, or one the caller may not see (the API does not tell them apart)",
    "413": "The body (or the run input in it) is larger than the configured limit",
    "415": "The body is not JSON (send Content-Type: application/json)",
}
MAX_PAGE_SIZE = 500
PAGE_PARAMETERS = [
    OpenApiParameter("page", {"type": "integer", "minimum": 1}, description="Page number (1 is the first)"),
    OpenApiParameter("page_size", {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
                     description=f"Items per page (default 50, at most {MAX_PAGE_SIZE})"),
]


def paginated(serializer_class, name: str):
    """A page of `serializer_class` items, as webbase.api.Pagination answers lists."""
    return inline_serializer(f"Paginated{name}List", fields={
        "count": serializers.IntegerField(help_text="Items in all pages"),
        "next": serializers.URLField(allow_null=True, help_text="The next page, null on the last"),
        "previous": serializers.URLField(allow_null=True, help_text="The previous page, null on the first"),
        "results": serializer_class(many=True),
    })


# JSON Schema keywords OpenAPI 3.0 lacks. Leaving them out only makes the document more
# permissive; the validator still applies them (and names the field when they fail).
_NOT_IN_OPENAPI_30 = ("if", "then", "else", "propertyNames", "$schema", "$id", "$defs")
# Keywords whose value maps names to schemas: the names are fields, not keywords to filter.
_SCHEMA_MAPS = ("properties", "patternProperties")


def as_openapi_30(schema, defs: dict | None = None):
    """A JSON Schema (2020-12) as OpenAPI 3.0 writes it: exclusive bounds are booleans there,
    `const` is a one-value enum, conditionals are left out, and references into `$defs` are
    written out in place (OpenAPI would resolve them against its own document); references
    elsewhere (the JSON Schema meta-schema) are left out."""
    if defs is None and isinstance(schema, dict):
        defs = schema.get("$defs") or {}
    if isinstance(schema, list):
        return [as_openapi_30(item, defs) for item in schema]
    if not isinstance(schema, dict):
        return schema
    ref = schema.get("$ref")
    if isinstance(ref, str):
        rest = {key: value for key, value in schema.items() if key != "$ref"}
        target = defs.get(ref.removeprefix("#/$defs/"), {}) if ref.startswith("#/$defs/") else {}
        return as_openapi_30({**target, **rest}, defs)
    converted = {}
    for key, value in schema.items():
        if key in _NOT_IN_OPENAPI_30:
            continue
        if key in _SCHEMA_MAPS and isinstance(value, dict):
            converted[key] = {name: as_openapi_30(item, defs) for name, item in value.items()}
        else:
            converted[key] = as_openapi_30(value, defs)
    if "allOf" in converted:
        parts = [part for part in converted.pop("allOf") if part]
        if parts:
            converted["allOf"] = parts
    if "const" in converted:
        converted["enum"] = [converted.pop("const")]
    for exclusive, bound in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        value = converted.get(exclusive)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            converted[bound], converted[exclusive] = value, True
    return converted


def definition_request_schema() -> dict:
    """A definition, plus the save fields the API accepts beside it."""
    schema = as_openapi_30(spec.definition_schema())
    schema["properties"] = {
        **schema["properties"],
        "message": {"type": "string", "maxLength": 500, "description": "Save message, stored with the version"},
        "base_version": {"type": "integer", "minimum": 1, "maximum": 2**31 - 1,
                         "description": "PUT only: the version the edit started from; 409 if a newer one exists"},
    }
    return schema


def document_errors(result, generator, request, public):
    """drf-spectacular postprocessing hook: shared error answers, closed request bodies."""
    for path_item in result.get("paths", {}).values():
        for method, operation in path_item.items():
            responses = operation.setdefault("responses", {})
            codes = ["401", "403", "404"]
            if operation.get("parameters") and any(p["in"] == "query" for p in operation["parameters"]):
                codes.append("400")
            if method in ("post", "put", "patch"):
                codes += ["400", "413", "415"]
            for code in codes:
                responses.setdefault(code, {"content": {"application/json": {"schema": ERROR_REF}},
                                            "description": ERRORS[code]})
    # The views refuse fields they do not know (SluiceAPIView.json_object): so do the bodies.
    for name, schema in result.get("components", {}).get("schemas", {}).items():
        if name.endswith("Request") and schema.get("type") == "object":
            schema["additionalProperties"] = False
    return result
