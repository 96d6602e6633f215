"""What Sluice's web apps (designer, monitor, triggers) share, below all of them.

It imports none of them, so each app may build on it without importing another app:
- `errors`: `ServiceError`, the base of every refusal a service raises (a message fit to show,
  and the HTTP status and code the REST API answers with);
- `api`: the REST API's base view, its one error shape and its exception handler;
- `openapi`: helpers for the OpenAPI schema (pagination, the error shape);
- `converters`: the `any` URL converter for names Sluice stored but did not make.
"""
