"""Batched upserts for the projector: multi-row `INSERT ... ON CONFLICT` statements. On SQLite
(3.24 and later) as many rows per statement as it takes parameters, in the driver's own markers
(`_driver_cursor` says why). On PostgreSQL the rows travel as one JSON document that the server
reads with jsonb_to_recordset (`_json_documents` says why), and through the same multi-row
statement when a value is not one JSON carries as is. `load()` reads back the rows a batch
updates.

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
from contextlib import contextmanager
from datetime import datetime
from datetime import timezone as dt_timezone
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
    rows = rows if isinstance(rows, list) else list(rows)
    if not rows:
        return 0
    if connection.vendor == "postgresql" and _as_json_document(model):
        try:
            documents = _json_documents(model, rows)
        except (TypeError, ValueError, msgspec.EncodeError):
            pass  # a value JSON cannot carry as is: the statement below adapts it per field
        else:
            with _driver_cursor(connection) as cursor:
                statement = _recordset_statement(model, tuple(conflict), tuple(update))
                for document in documents:
                    cursor.execute(statement, [document])
            return len(rows)
    fields = _fields(model)
    adapters = [_adapter(field, connection) for field in fields]
    values = [[adapt(row) for adapt in adapters] for row in rows]
    # SQLite takes 32,766 parameters a statement (999 before 3.32), PostgreSQL 65,535.
    limit = connection.features.max_query_params or 65535
    per_statement = max(1, min(limit // len(fields), 1000))
    with _driver_cursor(connection) as cursor:
        for start in range(0, len(values), per_statement):
            chunk = values[start:start + per_statement]
            cursor.execute(_statement(model, tuple(conflict), tuple(update), len(chunk), connection.vendor),
                           [value for row in chunk for value in row])
    return len(values)


def new_row(model: type[models.Model], **values) -> SimpleNamespace:
    """A new row for upsert(): every field at its default, then `values`. Like `model(**values)`
    for upsert's purposes, at a fraction of the cost of building a model instance."""
    fixed, made = _defaults(model)
    row = SimpleNamespace(**fixed)
    for name, make in made:
        if name not in values:
            setattr(row, name, make())  # a fresh dict or list per row, as the model would have
    row.__dict__.update(values)
    return row


def load(model: type[models.Model], field: str, keys: Iterable) -> list[SimpleNamespace]:
    """The rows of `model` whose `field` is one of `keys`, as upsert() takes them back: one
    attribute per field, with the values the ORM would give (JSON decoded, aware datetimes).

    `Model.objects.filter(...)` does the same through the compiler and a model instance per row,
    which was a fifth of the projector's time (py-spy, 5,000 three-step runs on SQLite)."""
    connection = connections[DEFAULT_DB_ALIAS]
    fields = _fields(model)
    names = [f.attname for f in fields]
    converters = [(name, convert) for name, convert in (_converter(f, connection) for f in fields)
                  if convert is not _unchanged]
    keys = list(keys)
    limit = min(connection.features.max_query_params or 65535, 1000)
    rows = []
    with _driver_cursor(connection) as cursor:
        for start in range(0, len(keys), limit):
            chunk = keys[start:start + limit]
            cursor.execute(_select(model, field, len(chunk), connection.vendor), chunk)
            for values in cursor.fetchall():
                row = SimpleNamespace(**dict(zip(names, values)))
                for name, convert in converters:
                    setattr(row, name, convert(getattr(row, name)))
                rows.append(row)
    return rows


@lru_cache(maxsize=64)
def _defaults(model) -> tuple[dict, tuple]:
    """(the defaults every new row shares, (attname, factory) for those each row needs its own of)."""
    fixed, made = {}, []
    for f in _fields(model):
        value = f.get_default()
        if isinstance(value, (dict, list, set)) or (f.has_default() and callable(f.default)):
            made.append((f.attname, f.get_default))
        else:
            fixed[f.attname] = value
    return fixed, tuple(made)


def _fields(model) -> list[models.Field]:
    return [f for f in model._meta.concrete_fields if not isinstance(f, models.AutoField)]


@lru_cache(maxsize=256)
def _statement(model, conflict: tuple[str, ...], update: tuple[str, ...], rows: int, vendor: str) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    fields = _fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    marks = _placeholders(vendor, rows * len(fields))
    values = ", ".join("(" + ", ".join(marks[start:start + len(fields)]) + ")"
                       for start in range(0, len(marks), len(fields)))
    return (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) VALUES {values} "
            f"ON CONFLICT {_conflict_action(model, conflict, update)}")


# Field kinds whose values travel as JSON unchanged and come out of jsonb_to_recordset as the ORM
# would store them: JSON as JSON (null is SQL NULL, as JSONField stores None), text and integers
# as themselves, aware datetimes as RFC 3339 text. Not floats: JSON has no NaN or infinity.
_JSON_CARRIED = (models.CharField, models.TextField, models.IntegerField, models.BooleanField, models.ForeignKey,
                 models.JSONField, models.DateTimeField)
JSON_DOCUMENT_ROWS = 2000  # rows per statement: bounds the document at a few MiB


@lru_cache(maxsize=64)
def _as_json_document(model) -> bool:
    return all(isinstance(f, _JSON_CARRIED) and not (isinstance(f, models.JSONField) and f.encoder is not None)
               for f in _fields(model))


def _json_documents(model, rows: list) -> list[str]:
    """PostgreSQL: the rows as JSON arrays of objects keyed by column, for `_recordset_statement`.

    One C call encodes a thousand rows; the server reads them with jsonb_to_recordset. Bound as a
    thousand rows of parameters instead, psycopg dumped every value in Python and the server
    parsed and planned a statement of twelve thousand parameters per batch: 310 -> 170 us of
    bridge CPU and 510 -> 350 us of server CPU per three-step run (5,000 captured runs, fsync off).
    As jsonb the document is parsed once; json_to_recordset parsed each JSON column's value again
    (7-12% more server CPU, three paired runs).
    Raises TypeError or ValueError for a value JSON would not carry faithfully."""
    fields = _fields(model)
    columns = [(f.column, f.attname, isinstance(f, models.DateTimeField)) for f in fields]
    documents = []
    for start in range(0, len(rows), JSON_DOCUMENT_ROWS):
        objects = []
        for row in rows[start:start + JSON_DOCUMENT_ROWS]:
            values = {}
            for column, name, is_datetime in columns:
                value = getattr(row, name)
                if is_datetime and value is not None and value.tzinfo is None:
                    raise ValueError("a naive datetime: the field decides its zone")
                values[column] = value
            objects.append(values)
        documents.append(msgspec.json.encode(objects).decode())
    return documents


@lru_cache(maxsize=64)
def _recordset_statement(model, conflict: tuple[str, ...], update: tuple[str, ...]) -> str:
    connection = connections[DEFAULT_DB_ALIAS]
    quote = connection.ops.quote_name
    fields = _fields(model)
    columns = ", ".join(quote(f.column) for f in fields)
    definition = ", ".join(f"{quote(f.column)} {f.cast_db_type(connection)}" for f in fields)
    return (f"INSERT INTO {quote(model._meta.db_table)} ({columns}) SELECT {columns} "
            f"FROM jsonb_to_recordset($1::jsonb) AS document({definition}) "
            f"ON CONFLICT {_conflict_action(model, conflict, update)}")


def _conflict_action(model, conflict: tuple[str, ...], update: tuple[str, ...]) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    by_name = {f.name: f for f in _fields(model)}
    target = ", ".join(quote(by_name[name].column) for name in conflict)
    if not update:
        return f"({target}) DO NOTHING"
    return f"({target}) DO UPDATE SET " + ", ".join(
        f"{quote(by_name[name].column)} = EXCLUDED.{quote(by_name[name].column)}" for name in update)


@lru_cache(maxsize=64)
def _select(model, field: str, keys: int, vendor: str) -> str:
    quote = connections[DEFAULT_DB_ALIAS].ops.quote_name
    columns = ", ".join(quote(f.column) for f in _fields(model))
    column = model._meta.get_field(field).column
    return (f"SELECT {columns} FROM {quote(model._meta.db_table)} "
            f"WHERE {quote(column)} IN ({', '.join(_placeholders(vendor, keys))})")


def _placeholders(vendor: str, count: int) -> list[str]:
    """The driver's own parameter markers: `?` for sqlite3, `$1`... for psycopg's raw cursor."""
    return ["?"] * count if vendor == "sqlite" else [f"${number}" for number in range(1, count + 1)]


@contextmanager
def _driver_cursor(connection):
    """A cursor of the database driver itself, in the connection's current transaction.

    Django's cursor rewrites a statement's `%s` markers for the driver on every execute, and on
    PostgreSQL psycopg's client-side binding then parses the statement and quotes every value
    into it, in Python: for these statements of up to a thousand rows, caching nothing (psycopg
    caches statements under 4 KiB), that was half the bridge's time on PostgreSQL (py-spy, a
    20,000-run burst). The driver's own markers and server-side binding skip both. What it
    gives up: these statements are not in Django's debug query log or its execute wrappers.
    The driver's errors are still raised as Django's (IntegrityError, OperationalError, ...), so
    callers catch them as they would from the ORM.
    """
    connection.ensure_connection()
    if connection.vendor == "sqlite":
        cursor = connection.connection.cursor()
    elif connection.vendor == "postgresql":
        import psycopg

        cursor = psycopg.RawCursor(connection.connection)
    else:
        raise NotImplementedError(f"monitor.upsert supports SQLite and PostgreSQL, not {connection.vendor}")
    try:
        with connection.wrap_database_errors:
            yield cursor
    finally:
        cursor.close()


def _converter(field: models.Field, connection):
    """(attname, function from the database's value to the ORM's) for the fields that need one."""
    name = field.attname
    if isinstance(field, models.JSONField) and field.decoder is None:
        def decode_json(value):
            if value is None or not isinstance(value, (str, bytes)):
                return value
            try:
                return msgspec.json.decode(value)
            except msgspec.DecodeError:
                return field.from_db_value(value, None, connection)  # what json.loads takes (NaN)
        return name, decode_json
    if isinstance(field, models.DateTimeField) and connection.vendor == "sqlite" and settings.USE_TZ:
        zone = connection.timezone

        def aware(value):  # what Django's SQLite backend does: its driver gives naive datetimes
            if isinstance(value, str):
                value = datetime.fromisoformat(value)
            if value is None or value.tzinfo is not None:
                return value
            return value.replace(tzinfo=zone)
        return name, aware
    if isinstance(field, _PLAIN) and not isinstance(field, models.BooleanField):
        return name, _unchanged
    # Anything else through the ORM's own converters (booleans on SQLite, custom fields).
    column = field.get_col(field.model._meta.db_table)
    steps = [*connection.ops.get_db_converters(column), *column.get_db_converters(connection)]

    def convert(value):
        for step in steps:
            value = step(value, column, connection)
        return value
    return name, convert


def _unchanged(value):
    return value


def _adapter(field: models.Field, connection) -> Callable[[object], object]:
    """A function from a row to this field's database value on `connection`."""
    name = field.attname
    if isinstance(field, models.JSONField):
        return _json_adapter(field, connection)
    if isinstance(field, models.DateTimeField) and connection.vendor == "sqlite" and settings.USE_TZ:
        zone = connection.timezone
        # str(value.replace(tzinfo=None)) is what Django stores; for UTC, the ISO text without its
        # "+00:00" is the same and costs 0.9 instead of 1.5 us (timeit), about 20 times a run.
        utc = zone is dt_timezone.utc

        texts: dict[datetime, str] = {}  # few distinct times a batch (see the projector): each formatted once

        def sqlite_datetime(row):
            value = getattr(row, name)
            if value is not None and value.tzinfo is zone:
                text = texts.get(value)
                if text is None:
                    text = texts[value] = value.isoformat(" ")[:-6] if utc else str(value.replace(tzinfo=None))
                return text
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
