"""Batched upserts for the projector: multi-row `INSERT ... ON CONFLICT` statements, as many
rows per statement as the backend takes parameters; the same SQL on SQLite (3.24 and later)
and PostgreSQL.

Django's bulk_create(update_conflicts=True) builds this statement too, but through the SQL
compiler, which resolves and prepares every value of every row on its own: with cProfile on a
3,000-run burst that was 70% of the bridge's time, capping the monitor at under a thousand runs
per second. Here the statement is written once per model and values are adapted per field
kind: the field's own get_db_prep_save only where the backend needs it (JSON, dates), plain
values as they are. Many rows per statement, not executemany: on PostgreSQL executemany is one
statement per row (a 3,000-run burst took 12 s that way).

Adapting values was the next cost (cProfile, 3,000 synthetic runs on SQLite: 3.1 of 8.1 s in
the fields' get_db_prep_save, mostly `json.dumps` and time-zone conversion): JSON goes through
msgspec (about ten times faster than json.dumps; it falls back to the field for anything msgspec
will not encode), and SQLite's datetimes are formatted directly, as Django's SQLite backend does.

Rows are model instances or any objects with the fields' attnames (the projector passes light
named tuples for history entries: a model instance costs more to build than to store).
The rows of one call must have distinct conflict keys (PostgreSQL refuses to update one row
twice in a statement); the projector passes one object per key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from functools import lru_cache
from types import SimpleNamespace

import msgspec
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS, connections, models
from django.utils import timezone

# Field kinds whose Python value is what the database driver takes, on SQLite and PostgreSQL.
_PLAIN = (models.CharField, models.TextField, models.IntegerField, models.FloatField, models.BooleanField,
          models.ForeignKey)


def upsert(model: type[models.Model], rows: Iterable, conflict: Sequence[str], update: Sequence[str] = ()) -> int:
    """Insert `rows`; a row whose `conflict` columns match an existing row updates that row's
    `update` fields instead (none given: the existing row is kept as it is). Auto primary keys
    are left to the database. Returns the rows sent."""
    connection = connections[DEFAULT_DB_ALIAS]  # this thread's, looked up once, not per value
    fields = _fields(model)
    adapters = [_adapter(field, connection) for field in fields]
    values = [[adapt(row) for adapt in adapters] for row in rows]
    # SQLite takes 32,766 parameters a statement (999 before 3.32), PostgreSQL 65,535.
    limit = connection.features.max_query_params or 65535
    per_statement = max(1, min(limit // len(fields), 1000))
    with connection.cursor() as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start:start + per_statement]
            cursor.execute(_statement(model, tuple(conflict), tuple(update), len(chunk), connection.vendor),
                           [value for row in chunk for value in row])
    return len(values)


def new_row(model: type[models.Model], **values) -> SimpleNamespace:
    """A new row for upsert(): every field at its default, then `values`. Like `model(**values)`
    for upsert's purposes, at a fraction of the cost of building a model instance."""
    row = SimpleNamespace(**{name: make() for name, make in _defaults(model)})
    row.__dict__.update(values)
    return row


@lru_cache(maxsize=64)
def _defaults(model) -> tuple:
    return tuple((f.attname, f.get_default) for f in _fields(model))


def _fields(model) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]


@lru_cache(maxsize=256)
def _statement(model, conflict: tuple[str, ...], update: tuple[str, ...], rows: int, _vendor: str) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    fields = _fields(model)
    by_name = {f.name: f for f in fields}
    columns = ", ".join(quote(f.column) for f in fields)
    one_row = "(" + ", ".join(["%s"] * len(fields)) + ")"
    target = ", ".join(quote(by_name[name].column) for name in conflict)
    if update:
        action = "DO UPDATE SET " + ", ".join(
            f"{quote(by_name[name].column)} = EXCLUDED.{quote(by_name[name].column)}" for name in update)
    else:
        action = "DO NOTHING"
    return (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {', '.join([one_row] * rows)} "
            f"ON CONFLICT ({target}) {action}")


def _adapter(field: models.Field, connection) -> Callable[[object], object]:
    """A function from a row to this field's database value on `connection`."""
    name = field.attname
    if isinstance(field, models.JSONField):
        return _json_adapter(field, connection)
    if isinstance(field, models.DateTimeField) and connection.vendor == "sqlite" and settings.USE_TZ:
        zone = connection.timezone
        def sqlite_datetime(row):
            value = getattr(row, name)
            if value is not None and value.tzinfo is zone:
                return str(value.replace(tzinfo=None))
            if value is None or timezone.is_naive(value):
                return field.get_db_prep_save(value, connection)
            return str(value.astimezone(zone).replace(tzinfo=None))  # what Django's SQLite backend stores
        return sqlite_datetime
    if isinstance(field, _PLAIN):
        return lambda row: getattr(row, name)
    return lambda row: field.get_db_prep_save(getattr(row, name), connection)


def _already_encoded(text: bytes) -> bytes:
    return text


def _json_adapter(field: models.JSONField, connection) -> Callable[[object], object]:
    name = field.attname
    if field.encoder is not None or connection.vendor not in ("sqlite", "postgresql"):
        return lambda row: field.get_db_prep_save(getattr(row, name), connection)
    if connection.vendor == "postgresql":
        from psycopg.types.json import Jsonb

        def wrap(text):
            return Jsonb(text, dumps=_already_encoded)
    else:
        def wrap(text):
            return text.decode()

    def adapt(row):
        value = getattr(row, name)
        if value is None:
            return None  # SQL NULL, as JSONField.get_db_prep_save stores None
        try:
            return wrap(msgspec.json.encode(value))
        except (TypeError, msgspec.EncodeError, UnicodeDecodeError):
            return field.get_db_prep_save(value, connection)  # what msgspec will not encode
    return adapt
