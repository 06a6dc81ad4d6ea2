"""Inputs found answering 500, or answering without naming the field, by a black-box pass
over every operation (2026-11-27): each is now a 422 naming what is wrong, with nothing
written. Every request goes through the real ASGI apps."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest

from services.dispatch.sla_schemas import CALENDAR_EXAMPLE
from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from tests.support.clients import service_client
from tests.test_input_validation import assert_problem, ledger_head, open_ticket

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
JSON = {"content-type": "application/json"}


@SQLITE
@pytest.mark.parametrize("number", ["1e999", "-1e999", "Infinity", "NaN", "1" * 400 + ".5"])
async def test_a_number_no_float_holds_is_422_not_a_ledger_that_cannot_be_read(
    platform: Platform, number: str
) -> None:
    tid = await open_ticket(platform)
    head = await ledger_head(platform)
    body = f'{{"outcome": "fixed", "cost_amount": {number}}}'
    async with service_client("dispatch", platform, role="admin") as dispatch:
        response = await dispatch.post(f"/tickets/{tid}/repair", content=body, headers=JSON)
    assert_problem(response, 422, "cost_amount")
    assert await ledger_head(platform) == head


@SQLITE
@pytest.mark.parametrize("end", ["17:00Z", "17:00:00+08:00", 0, 1.5, 12345])
async def test_working_hours_are_local_times_as_text(platform: Platform, end: Any) -> None:
    shift = {"weekday": "mon", "start": "08:00", "end": end}
    technician = {"id": "t1", "name": "R", "service_point_id": "sp-1", "working_hours": [shift]}
    hours = [{"weekday": "mon", "start": "09:00", "end": end}]
    calendar = {"name": "Hangzhou", "timezone": "Asia/Shanghai", "hours": hours}
    async with service_client("dispatch", platform, role="admin") as dispatch:
        assert_problem(
            await dispatch.post("/technicians", json=technician), 422, "working_hours.0.end"
        )
        assert_problem(await dispatch.put("/calendars/hz", json=calendar), 422, "hours.0.end")


@SQLITE
async def test_built_in_calendar_choices_are_not_calendars_to_define(platform: Platform) -> None:
    calendar = {
        "name": "Always",
        "timezone": "UTC",
        "hours": [{"weekday": "mon", "start": "00:00", "end": "00:00"}],
    }
    async with service_client("dispatch", platform, role="admin") as dispatch:
        for reserved in ("24x7", "local"):
            response = await dispatch.put(f"/calendars/{reserved}", json=calendar)
            assert_problem(response, 422, "calendar_id")
        built_in = await dispatch.get("/calendars/24x7")
        assert built_in.status_code == 404 and "built in" in built_in.json()["detail"]


@SQLITE
async def test_an_icalendar_duration_beyond_any_date_is_422(platform: Platform) -> None:
    calendar = {
        "name": "Hangzhou",
        "timezone": "Asia/Shanghai",
        "hours": [{"weekday": "mon", "start": "09:00", "end": "17:00"}],
    }
    ics = (
        "BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART;VALUE=DATE:20271001\r\n"
        "DURATION:P99999999D\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n"
    )
    async with service_client("dispatch", platform, role="admin") as dispatch:
        assert (await dispatch.put("/calendars/hz", json=calendar)).status_code in (200, 201)
        assert_problem(await dispatch.post("/calendars/hz/ics", json={"ics": ics}), 422, "ics")


@SQLITE
@pytest.mark.parametrize("encoding", ["utf-16", "punycode"])
async def test_an_encoding_that_cannot_read_the_file_refuses_it(
    platform: Platform, encoding: str
) -> None:
    csv = b"part_number,name,unit_cost\nP-1,Motor,10\n"
    async with service_client("parts", platform, role="admin") as parts:
        response = await parts.post(
            "/imports/parts",
            params={"dry_run": "true", "encoding": encoding},
            content=csv,
            headers={"content-type": "text/csv"},
        )
    assert response.status_code == 422, response.text
    assert response.json()["type"].endswith("import-refused")


@SQLITE
async def test_one_end_of_an_appointment_names_the_missing_end(platform: Platform) -> None:
    tid = await open_ticket(platform)
    async with service_client("dispatch", platform, role="admin") as dispatch:
        body = {"appointment_start": "2026-11-30T09:00:00Z"}
        assert_problem(
            await dispatch.post(f"/tickets/{tid}/dispatch", json=body), 422, "appointment_end"
        )


@SQLITE
async def test_a_date_time_is_iso_text_not_unix_seconds(platform: Platform) -> None:
    what_if = {"policy": {"name": "p"}, "received_from": -1, "received_to": "2026-12-31T16:00:00Z"}
    async with service_client("dispatch", platform, role="admin") as dispatch:
        assert_problem(await dispatch.post("/sla/what-if", json=what_if), 422, "received_from")
    async with service_client("intake", platform, role="auditor") as intake:
        listed = await intake.get("/tickets", params={"created_from": "1700000000"})
        assert_problem(listed, 422, "created_from")


@SQLITE
@pytest.mark.parametrize(
    "day", [1772323200, "1772323200", 20260301.0, "2026-03-01T00:00:00Z", "2026-03-01T00:00+08:00"]
)
async def test_a_calendar_date_is_iso_text_not_a_number_or_a_date_time(
    platform: Platform, day: Any
) -> None:
    ticket = {**RECEIVE_EXAMPLE, "product": {**RECEIVE_EXAMPLE["product"], "purchase_date": day}}
    calendar = {**CALENDAR_EXAMPLE, "holidays": [{"day": day}], "working_days": []}
    item = {"service_point_id": "sp-1", "item": "poor_service", "occurred_on": day}
    item["evidence"] = "article"
    head = await ledger_head(platform)
    async with service_client("intake", platform) as agent:
        response = await agent.post("/tickets", json=ticket)
        assert_problem(response, 422, "product.purchase_date")
    async with service_client("dispatch", platform, role="admin") as dispatch:
        response = await dispatch.put("/calendars/hz", json=calendar)
        assert_problem(response, 422, "holidays.0.day")
    async with service_client("feedback", platform, role="admin") as feedback:
        response = await feedback.post("/scorecards/items", json=item)
        assert_problem(response, 422, "occurred_on")
    assert await ledger_head(platform) == head


@SQLITE
async def test_a_key_given_twice_in_a_json_object_is_422(platform: Platform) -> None:
    body = '{"fits_models": [], "name": "n", "name": "m", "return_required": false, '
    body += '"unit_cost": 1}'
    head = await ledger_head(platform)
    async with service_client("parts", platform, role="admin") as parts:
        response = await parts.put("/parts/P-NUM", content=body, headers=JSON)
        assert_problem(response, 422, "name")
        nested = body.replace('"name": "n", "name": "m"', '"name": "n", "x": {"a": 1, "a": 2}')
        assert_problem(await parts.put("/parts/P-NUM", content=nested, headers=JSON), 422, "x.a")
    assert await ledger_head(platform) == head


@SQLITE
async def test_urgency_is_required_at_intake(platform: Platform) -> None:
    """DOMAIN.md lists it among the required intake fields: a forgotten urgency is not
    silently the longest deadline (the go-live import requires it too)."""
    ticket = {k: v for k, v in RECEIVE_EXAMPLE.items() if k != "urgency"}
    async with service_client("intake", platform) as agent:
        assert_problem(await agent.post("/tickets", json=ticket), 422, "urgency")


@SQLITE
@pytest.mark.parametrize("body", ['{"request_id": "a", ', "{", "[1,"])
async def test_a_body_that_is_not_json_names_the_body(platform: Platform, body: str) -> None:
    async with service_client("intake", platform) as agent:
        response = await agent.post("/tickets", content=body, headers=JSON)
    assert_problem(response, 422, "body")
    assert "not valid JSON" in response.json()["errors"][0]["message"]


@SQLITE
@pytest.mark.parametrize("active", ["yes", 1, "true", None])
async def test_a_flag_is_a_json_boolean(platform: Platform, active: Any) -> None:
    customer = str(uuid.uuid4())
    async with service_client("intake", platform, role="privacy_officer") as dpo:
        body = {"active": active, "reason": "court order"}
        response = await dpo.put(f"/customers/{customer}/legal-hold", json=body)
    assert_problem(response, 422, "active")


@SQLITE
@pytest.mark.parametrize(
    "body",
    [
        '{"urgency": "normal", "n": ' + "9" * 4301 + "}",  # past Python's digits for an int
        '{"urgency": "normal", "n": ' + "[" * 3000 + "]" * 3000 + "}",  # past its recursion
    ],
)
async def test_json_no_reader_takes_is_a_422_naming_the_body(platform: Platform, body: str) -> None:
    """Valid JSON the parsers refuse (a 4,301-digit number, nesting 3,000 deep) was the
    framework's bare 400 'error parsing the body'."""
    async with service_client("intake", platform) as agent:
        response = await agent.post("/tickets", content=body, headers=JSON)
    assert_problem(response, 422, "body")


@SQLITE
@pytest.mark.parametrize("flag", ["yes", 1, "true"])
async def test_every_flag_of_a_dispatch_body_is_a_json_boolean(
    platform: Platform, flag: Any
) -> None:
    """The event's own fields (a service point's ``active``, a policy's ``pause_for_parts``,
    a used part's ``under_warranty``) take JSON booleans only, as every other flag does."""
    from services.dispatch.schemas import SERVICE_POINT_EXAMPLE
    from services.dispatch.sla_schemas import POLICY_EXAMPLE

    async with service_client("dispatch", platform, role="admin") as admin:
        point = {**SERVICE_POINT_EXAMPLE, "active": flag}
        assert_problem(await admin.post("/service-points", json=point), 422, "active")
        policy = {**POLICY_EXAMPLE, "pause_for_parts": flag}
        answer = await admin.put("/sla-policies/p-1", json=policy)
        assert_problem(answer, 422, "pause_for_parts")
    from shared.kernel.events.tickets import UsedPart

    with pytest.raises(ValueError, match="under_warranty"):
        UsedPart.model_validate({"part_number": "P-1", "under_warranty": flag})


@SQLITE
async def test_a_method_not_allowed_names_every_method_of_the_path(platform: Platform) -> None:
    async with service_client("intake", platform, role="admin") as intake:
        response = await intake.delete("/tickets")
        # Worded as the API's other problems: no route is a 404 with a rule.
        nowhere = await intake.get("/no/such/thing")
        # A trailing slash: said, never a redirect built from the caller's Host header.
        slashed = await intake.post("/tickets/", json={}, headers={"Host": "evil.example"})
    assert response.status_code == 405
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.headers["allow"] == "GET, POST"
    assert response.json()["title"] == "Method not allowed"
    assert response.json()["detail"] == "DELETE /tickets: allowed GET, POST"
    assert nowhere.status_code == 404 and nowhere.json()["rule"] == "no_such_path"
    assert nowhere.json()["title"] == "Not found"
    assert slashed.status_code == 404 and "location" not in slashed.headers
    assert "without its trailing slash" in slashed.json()["detail"]


@SQLITE
async def test_a_concurrent_append_is_decided_again_unless_if_match_named_a_version(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A reactor appending to the ticket between a command's read and its append made the
    command answer 409 'expected_version' to a caller who named no version."""
    from shared.eventstore.ledger import ConcurrencyError

    tid = await open_ticket(platform)
    real_append = platform.store.append
    conflicts = {"left": 0}

    def append(conn: Any, appends: Any, context: Any, **kw: Any) -> Any:
        if conflicts["left"]:
            conflicts["left"] -= 1
            raise ConcurrencyError(tid, 1, None)  # as if another writer got in first
        return real_append(conn, appends, context, **kw)

    monkeypatch.setattr(platform.store, "append", append)
    diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
    async with service_client("intake", platform) as agent:
        conflicts["left"] = 1
        decided = await agent.post(f"/tickets/{tid}/diagnosis", json=diagnosis)
        assert decided.status_code == 200, decided.text
        conflicts["left"] = 1
        stale = await agent.post(
            f"/tickets/{tid}/diagnosis", json=diagnosis, headers={"If-Match": '"2"'}
        )
    assert stale.status_code == 409 and stale.json()["rule"] == "expected_version"


@SQLITE
@pytest.mark.parametrize(
    ("service", "role", "path", "field"),
    [
        ("intake", "dispatcher", "/tickets?status=received&status=closed", "status"),
        ("intake", "dispatcher", "/tickets?statuss=closed", "statuss"),
        ("intake", "dispatcher", "/tickets?limit=2&limit=3", "limit"),
        ("dispatch", "admin", "/service-points?region=east&region=west", "region"),
        ("parts", "admin", "/requisitions?region=east", "region"),
        ("feedback", "auditor", "/compliance/tickets?month=2026-11&month=2026-10", "month"),
    ],
)
async def test_a_query_parameter_given_twice_or_unknown_is_422_not_dropped(
    platform: Platform, service: str, role: str, path: str, field: str
) -> None:
    """A filter given twice answered the last one's list, a misspelled one every row: a
    200 with another list than the one asked for. Each is a 422 naming the parameter."""
    async with service_client(service, platform, role=role) as client:
        assert_problem(await client.get(path), 422, field)


@SQLITE
async def test_probes_answer_whatever_a_monitor_appends(platform: Platform) -> None:
    async with service_client("intake", platform) as client:
        assert (await client.get("/health/live?probe=1")).status_code == 200
        assert (await client.get("/metrics?ts=1")).status_code == 200


@SQLITE
@pytest.mark.parametrize("encoding", ["utf-16", "utf-16-be", "utf-32", "latin-1"])
async def test_a_json_body_not_in_utf8_is_400_with_nothing_written(
    platform: Platform, encoding: str
) -> None:
    # json.loads would read UTF-16 and UTF-32; JSON between systems is UTF-8 (RFC 8259).
    ticket = {**RECEIVE_EXAMPLE, "customer": {**RECEIVE_EXAMPLE["customer"], "name": "Lí Wéi"}}
    body = json.dumps(ticket, ensure_ascii=False).encode(encoding)
    head = await ledger_head(platform)
    async with service_client("intake", platform) as agent:
        refused = await agent.post("/tickets", content=body, headers=JSON)
        assert refused.status_code == 400, refused.text
        assert refused.headers["content-type"] == "application/problem+json"
        assert refused.json()["errors"][0]["field"] == "body"  # named, as a 422 names it
        assert await ledger_head(platform) == head
        with_bom = json.dumps(ticket, ensure_ascii=False).encode("utf-8-sig")
        assert (await agent.post("/tickets", content=with_bom, headers=JSON)).status_code == 201


async def test_a_query_value_that_is_not_utf8_is_422_naming_it(platform: Platform) -> None:
    """Starlette reads bytes that are no UTF-8 (a lone surrogate's, 0xFF) as U+FFFD without
    a word: a filter quietly matched nothing, an echoed value came back garbled."""
    async with service_client("dispatch", platform, role="admin") as admin:
        for raw in ("%ED%A0%80", "%FF%FE", "ok%C3"):
            response = await admin.get(f"/technicians?skill={raw}")
            assert response.status_code == 422, response.text
            assert [e["field"] for e in response.json()["errors"]] == ["skill"]
        fine = await admin.get("/technicians?skill=%E6%B4%97%E8%A1%A3%E6%9C%BA")  # 洗衣机
        assert fine.status_code == 200, fine.text


@pytest.mark.parametrize(
    ("given", "taken"), [(4, 4), (4.0, 4), ("4", None), (True, None), (4.5, None)]
)
def test_a_count_is_a_json_integer_written_either_way(given: Any, taken: int | None) -> None:
    """JSON Schema's "integer" takes 4.0 as well as 4 (a client generated from the
    published schema may send either); text and booleans stay refused."""
    from pydantic import TypeAdapter, ValidationError

    from shared.kernel.events.parts import Quantity

    reader = TypeAdapter(Quantity)
    assert reader.json_schema()["type"] == "integer"
    if taken is None:
        with pytest.raises(ValidationError):
            reader.validate_python(given)
    else:
        assert reader.validate_python(given) == taken
