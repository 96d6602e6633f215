"""monitor/upsert.py writes what the ORM would: same values read back, same lookups work,
on SQLite and (in the PostgreSQL run of `make test`) on PostgreSQL."""

from __future__ import annotations

import warnings
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from django.db import connection

from monitor.models import HistoryEntry, Run, StepRun
from monitor.projector import HistoryRow
from monitor.upsert import load, new_row, upsert

pytestmark = pytest.mark.django_db

AWKWARD_JSON = [
    {"name": "Zoë 🚀 \u2028", "quote": 'say "hi"\\', "nested": {"list": [1, 2.5, None, True, {"a": []}]}},
    [],
    {},
    "just a string",
    0,
    None,
]

MOMENTS = [
    datetime(2026, 12, 1, 3, 4, 5, tzinfo=timezone.utc),  # no microseconds: str() leaves them out
    datetime(2026, 12, 1, 3, 4, 5, 123456, tzinfo=timezone.utc),
    datetime(2026, 6, 1, 9, 0, 0, 1, tzinfo=ZoneInfo("Europe/Berlin")),  # another zone, in summer time
]


def orm_and_upserted(index: int, value, moment) -> tuple[Run, Run]:
    fields = dict(workflow="w", version=1, status="running", input=value if value is not None else {},
                  output=value, trigger={"type": "manual"}, created_at=moment, started_at=moment, ended_at=None)
    Run.objects.create(id=f"orm-{index}", **fields)
    upsert(Run, [new_row(Run, id=f"ups-{index}", **fields)], conflict=["id"], update=["status"])
    return Run.objects.get(id=f"orm-{index}"), Run.objects.get(id=f"ups-{index}")


@pytest.mark.parametrize("index", range(len(AWKWARD_JSON)))
def test_json_values_read_back_as_the_orm_writes_them(index):
    value = AWKWARD_JSON[index]
    orm, upserted = orm_and_upserted(index, value, MOMENTS[index % len(MOMENTS)])
    for field in ("input", "output", "trigger", "created_at", "started_at", "ended_at", "error", "last_seq"):
        assert getattr(upserted, field) == getattr(orm, field), field
    # None in a nullable JSON column is SQL NULL, as the ORM stores it (not JSON null).
    assert Run.objects.filter(id=upserted.id, output__isnull=True).exists() == (value is None)


def test_json_lookups_and_datetime_filters_see_upserted_rows():
    orm_and_upserted(0, AWKWARD_JSON[0], MOMENTS[1])
    assert set(Run.objects.filter(input__name="Zoë 🚀 \u2028").values_list("id", flat=True)) == {"orm-0", "ups-0"}
    assert set(Run.objects.filter(output__nested__list__3=True).values_list("id", flat=True)) == {"orm-0", "ups-0"}
    window = (MOMENTS[1] - timedelta(microseconds=1), MOMENTS[1] + timedelta(microseconds=1))
    assert set(Run.objects.filter(created_at__range=window).values_list("id", flat=True)) == {"orm-0", "ups-0"}


@pytest.mark.parametrize("moment", MOMENTS)
def test_datetimes_in_any_zone_read_back_as_the_same_instant(moment):
    orm, upserted = orm_and_upserted(9, {}, moment)
    assert upserted.created_at == orm.created_at == moment


def test_an_update_on_conflict_changes_only_the_named_fields():
    moment = MOMENTS[0]
    upsert(Run, [new_row(Run, id="r", workflow="w", version=1, status="running", created_at=moment, error="")],
           conflict=["id"], update=["status"])
    upsert(Run, [new_row(Run, id="r", workflow="other", version=2, status="succeeded", created_at=moment,
                         error="not kept")], conflict=["id"], update=["status"])
    run = Run.objects.get(id="r")
    assert (run.status, run.workflow, run.version, run.error) == ("succeeded", "w", 1, "")


def test_new_rows_start_from_the_models_defaults():
    row, model = new_row(StepRun, run_id="r", step_id="s"), StepRun(run_id="r", step_id="s")
    for field in StepRun._meta.concrete_fields:
        if field.primary_key:
            continue  # the database numbers the row
        assert getattr(row, field.attname) == getattr(model, field.attname), field.name
    # Mutable defaults are fresh per row, as the model's are.
    other = new_row(StepRun, run_id="r", step_id="t")
    row.attempts.append({"attempt": 1})
    assert other.attempts == []


def test_light_history_rows_insert_and_duplicates_are_kept_out():
    Run.objects.create(id="h", workflow="w", version=1, status="running", created_at=MOMENTS[0])
    rows = [HistoryRow(run_id="h", seq=seq, kind="step_started", step_id="s", ts=MOMENTS[1], data={"seq": seq})
            for seq in (1, 2)]
    upsert(HistoryEntry, rows, conflict=["run", "seq"])
    upsert(HistoryEntry, [rows[0]._replace(data={"changed": True})], conflict=["run", "seq"])
    stored = list(HistoryEntry.objects.filter(run_id="h").order_by("seq").values_list("seq", "data", "ts"))
    assert stored == [(1, {"seq": 1}, MOMENTS[1]), (2, {"seq": 2}, MOMENTS[1])]


def test_a_value_msgspec_refuses_still_goes_through_the_field(settings):
    # A dict with an integer key: the ORM's json.dumps turns the key into "1"; so must upsert.
    orm, upserted = orm_and_upserted(7, {1: "one"}, MOMENTS[0])
    assert upserted.input == orm.input == {"1": "one"}


def _as_the_orm_reads(instance) -> dict:
    return {f.attname: getattr(instance, f.attname) for f in type(instance)._meta.concrete_fields
            if not f.primary_key or not f.auto_created}


@pytest.mark.parametrize("index", range(len(AWKWARD_JSON)))
def test_loaded_rows_hold_what_the_orm_reads(index):
    orm, _upserted = orm_and_upserted(index, AWKWARD_JSON[index], MOMENTS[index % len(MOMENTS)])
    StepRun.objects.create(run_id=orm.id, step_id="a", type="transform", attempts=[{"attempt": 1}],
                           output=AWKWARD_JSON[index], started_at=MOMENTS[1])
    StepRun.objects.create(run_id=orm.id, step_id="b", type="python")
    (run,) = load(Run, "id", [orm.id, "no-such-run"])
    assert vars(run) == _as_the_orm_reads(Run.objects.get(id=orm.id))
    steps = sorted(load(StepRun, "run", [orm.id]), key=lambda step: step.step_id)
    assert [vars(step) for step in steps] == [
        _as_the_orm_reads(step) for step in StepRun.objects.filter(run_id=orm.id).order_by("step_id")]
    # A loaded row goes back through upsert unchanged.
    upsert(Run, [run], conflict=["id"], update=["input", "output", "created_at", "started_at", "ended_at"])
    assert _as_the_orm_reads(Run.objects.get(id=orm.id)) == vars(run)


def test_loaded_json_that_only_json_loads_reads_is_read_as_the_orm_reads_it():
    # Valid JSON to both databases and to json.loads; msgspec refuses the number as a float.
    Run.objects.create(id="huge", workflow="w", version=1, status="running", created_at=MOMENTS[0])
    with connection.cursor() as cursor:
        cursor.execute(f"UPDATE {Run._meta.db_table} SET input = %s WHERE id = %s", ['{"x": 1e400}', "huge"])
    (run,) = load(Run, "id", ["huge"])
    # SQLite keeps the text (read as infinity); PostgreSQL's jsonb the exact number (an int).
    assert run.input == Run.objects.get(id="huge").input
    assert run.input["x"] > 1e300


def test_loading_more_keys_than_one_statement_takes():
    Run.objects.bulk_create([Run(id=f"many-{i}", workflow="w", version=1, status="running", created_at=MOMENTS[0])
                             for i in range(1500)])
    loaded = load(Run, "id", [f"many-{i}" for i in range(1500)])
    assert sorted(run.id for run in loaded) == sorted(f"many-{i}" for i in range(1500))


AWKWARD_TEXT = ['say "hi"\\', "line\nbreak\ttab\r", '{"x": 1}', "null", "", "Zoë 🚀 \u2028 \U0010ffff",
                "'; DROP TABLE monitor_run; --", "$1 ? %s %(x)s"]


@pytest.mark.parametrize("index", range(len(AWKWARD_TEXT)))
def test_text_reads_back_as_the_orm_writes_it(index):
    # On PostgreSQL rows travel as one JSON document (json_to_recordset): text that looks like JSON,
    # markers or SQL must come out as the same text, as it does through the ORM.
    text = AWKWARD_TEXT[index]
    fields = dict(workflow="w", version=1, status="failed", error=text, started_by=text, created_at=MOMENTS[1])
    Run.objects.create(id=f"orm-{index}", **fields)
    upsert(Run, [new_row(Run, id=f"ups-{index}", **fields)], conflict=["id"], update=["error"])
    assert Run.objects.get(id=f"ups-{index}").error == Run.objects.get(id=f"orm-{index}").error == text
    assert Run.objects.filter(started_by=text).count() == 2


def test_a_naive_datetime_is_stored_as_the_field_stores_it(settings):
    settings.TIME_ZONE = "Asia/Tokyo"  # the field makes it aware here; the database session is in UTC
    naive = datetime(2026, 12, 1, 3, 4, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # Django warns of naive datetimes under USE_TZ
        orm, upserted = orm_and_upserted(8, {}, naive)
    assert upserted.created_at == orm.created_at == naive.replace(tzinfo=ZoneInfo("Asia/Tokyo"))


def test_more_rows_than_one_statement_takes_are_all_written():
    Run.objects.create(id="long", workflow="w", version=1, status="running", created_at=MOMENTS[0])
    rows = [HistoryRow(run_id="long", seq=seq, kind="step_started", step_id=f"s{seq}", ts=MOMENTS[seq % 3],
                       data={"seq": seq}) for seq in range(1, 4502)]
    assert upsert(HistoryEntry, rows, conflict=["run", "seq"]) == 4501
    stored = HistoryEntry.objects.filter(run_id="long")
    assert stored.count() == 4501
    assert stored.get(seq=4501).data == {"seq": 4501} and stored.get(seq=4501).ts == MOMENTS[4501 % 3]


def test_the_drivers_errors_are_raised_as_djangos():
    # The projector tells a row the database refuses (IntegrityError, DataError) from a database
    # that is away; the driver's own cursor must not hide which is which.
    from django.db import IntegrityError

    with pytest.raises(IntegrityError):
        upsert(Run, [new_row(Run, id="bad", workflow="w", version=1, status="running", created_at=MOMENTS[0],
                             last_seq=-1)], conflict=["id"])
