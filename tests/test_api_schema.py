"""Schemathesis over /api/schema/: the REST API answers what its OpenAPI document says.

Every operation, with data that fits the schema and data that does not, signed in (a
superuser's token, so no answer is a refusal for lack of rights) and anonymous. Bounded and
repeatable: a fixed number of examples per operation and mode, derandomized (a fixed seed).
Every check schemathesis has runs (no server error, documented status codes, content types
and response shapes, schema-invalid requests refused, schema-valid ones accepted), with one
exception: a definition that fits its JSON Schema can still be refused with 400, since the
graph, the expressions and each step type's config are checked beyond what JSON Schema can say.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.specs.openapi.checks import positive_data_acceptance

pytestmark = [pytest.mark.kafka]

EXAMPLES_SIGNED_IN = 15
EXAMPLES_ANONYMOUS = 5
# (method, path): the definition bodies (see the module docstring).
SEMANTICALLY_VALIDATED = {("POST", "/api/workflows/"), ("PUT", "/api/workflows/{slug}/")}


@pytest.fixture
def wsgi_app():
    """Django's WSGI app in-process, keeping the test's database connection between requests."""
    from django.core.signals import request_finished, request_started
    from django.core.wsgi import get_wsgi_application
    from django.db import close_old_connections

    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    yield get_wsgi_application()
    request_started.connect(close_old_connections)
    request_finished.connect(close_old_connections)


@pytest.fixture
def token(db):
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from designer import services
    from tests.test_api_workflows import definition

    admin = User.objects.create_superuser("schemathesis", password="pw-schemathesis-for-tests")
    services.create_workflow(definition(), admin)  # something to find among the random names
    return Token.objects.create(user=admin).key


def run_schemathesis(app, token: str, headers: dict, examples: int) -> tuple[int, dict]:
    schema = schemathesis.openapi.from_wsgi("/api/schema/?format=json", app,
                                            headers={"Authorization": f"Token {token}"})
    failures: dict[tuple, str] = {}
    cases = 0
    for result in schema.get_all_operations():
        operation = result.ok()
        excluded = [positive_data_acceptance] if (operation.method.upper(), operation.path) in \
            SEMANTICALLY_VALIDATED else []
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            @given(case=operation.as_strategy(generation_mode=mode))
            @settings(max_examples=examples, derandomize=True, deadline=None, database=None,
                      suppress_health_check=list(HealthCheck))
            def check(case):
                nonlocal cases
                cases += 1
                try:
                    case.call_and_validate(headers=headers, excluded_checks=excluded)
                except (AssertionError, BaseExceptionGroup) as exc:  # one report per distinct failure
                    failures.setdefault((operation.label, mode.value, str(exc).splitlines()[0]), str(exc)[:3000])

            try:
                check()
            except Unsatisfiable:
                pass  # nothing to make invalid (an operation without parameters or body)
    return cases, failures


def report(failures: dict) -> str:
    return "\n\n".join(f"{label} ({mode}): {text}" for (label, mode, _first), text in failures.items())


def test_the_api_matches_its_schema_signed_in(kafka, token, wsgi_app, capsys):
    cases, failures = run_schemathesis(wsgi_app, token, {"Authorization": f"Token {token}"}, EXAMPLES_SIGNED_IN)
    with capsys.disabled():
        print(f"\nschemathesis, signed in: {cases} cases, {len(failures)} failures")
    assert cases > 500
    assert not failures, report(failures)


def test_the_api_matches_its_schema_anonymous(kafka, token, wsgi_app, capsys):
    cases, failures = run_schemathesis(wsgi_app, token, {}, EXAMPLES_ANONYMOUS)
    with capsys.disabled():
        print(f"\nschemathesis, anonymous: {cases} cases, {len(failures)} failures")
    assert cases > 150
    assert not failures, report(failures)
