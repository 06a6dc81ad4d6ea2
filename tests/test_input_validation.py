"""Input outside its type is a 4xx problem naming the field, before any work starts — one
test per class of input (shared/http/params.py, shared/http/validation.py), not per route:

- header, query and path values outside their type (non-ASCII digits, thousands of
  digits, positions beyond BIGINT, versions beyond INTEGER, weeks and times whose dates
  leave the calendar, forged cursors);
- malformed filters, on every list endpoint of every service;
- text a database cannot store (NUL, lone surrogates) anywhere in a request — on both
  databases, since PostgreSQL is where NUL broke;
- database outages (503 with Retry-After) and unhandled errors (a 500 problem);
- the OpenAPI documents describe the problem answers and header formats.
"""

from __future__ import annotations

import base64
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import exc as sa

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.app.registry import SERVICES, app_factory
from tests.support import asgi
from tests.support.auth import headers_for
from tests.support.clients import service_client
from tests.support.ledger import ledger_head

SQLITE = pytest.mark.parametrize("backend", ["sqlite"])
PROBLEM = "application/problem+json"


def assert_problem(response: httpx.Response | asgi.Answer, status: int, field: str) -> None:
    if isinstance(response, asgi.Answer):
        code, content_type, body = response.status, response.content_type, response.body
    else:
        code, content_type, body = (
            response.status_code,
            response.headers["content-type"],
            response.content,
        )
    assert code == status, body
    assert content_type.startswith(PROBLEM), content_type
    fields = [e["field"] for e in json.loads(body).get("errors", [])]
    assert field in fields, (field, json.loads(body))


async def open_ticket(platform: Platform) -> str:
    async with service_client("intake", platform) as agent:
        response = await agent.post("/tickets", json=RECEIVE_EXAMPLE)
        assert response.status_code == 201, response.text
        return str(response.json()["ticket_id"])


# --- class 1: header, query and path values outside their type --------------------------

OUTSIDE_A_VERSION = [
    '"٣"',  # Arabic-Indic digit: str.isdigit() says yes
    "３",  # fullwidth
    '"' + "9" * 5000 + '"',
    f'"{2**31}"',  # beyond the stream_version INTEGER column
    'W/"1.0"',
    '"-1"',
    "*",
    '"01"',  # no ETag we give: a leading zero would name version 1 under another tag
]


@SQLITE
@pytest.mark.parametrize("value", OUTSIDE_A_VERSION)
async def test_if_match_outside_a_stream_version_is_422_before_any_work(
    platform: Platform, value: str
) -> None:
    tid = await open_ticket(platform)
    before = await ledger_head(platform)
    fix = {"reason": "typo", "customer": {"name": "Li Wei", "phone": "13900000000"}}
    async with service_client("intake", platform, role="dispatcher") as client:
        response = await client.patch(
            f"/tickets/{tid}/contact", json=fix, headers={"If-Match": value.encode()}
        )
        assert_problem(response, 422, "If-Match")
        assert await ledger_head(platform) == before
        ok = await client.patch(f"/tickets/{tid}/contact", json=fix, headers={"If-Match": '"1"'})
        assert ok.status_code == 200, ok.text


OUTSIDE_A_POSITION = ["٣", "１２", "9" * 5000, str(2**63), "-1", "1e3", " "]


@SQLITE
@pytest.mark.parametrize("value", OUTSIDE_A_POSITION)
async def test_positions_outside_bigint_or_ascii_digits_are_422_not_a_dying_stream(
    platform: Platform, value: str
) -> None:
    app = app_factory("intake")(platform)
    auditor = headers_for("auditor")
    resumed = await asgi.call(
        app, "GET", "/streams/events", headers={**auditor, "Last-Event-ID": value}
    )
    assert_problem(resumed, 422, "Last-Event-ID")
    started = await asgi.call(
        app, "GET", "/streams/events", headers=auditor, params={"from_position": value}
    )
    assert_problem(started, 422, "from_position")
    # The largest position is one: past this ledger's end, so 409 (not a 422 of its form).
    edge = await asgi.call(
        app, "GET", "/streams/events", headers={**auditor, "Last-Event-ID": str(2**63 - 1)}
    )
    assert_problem(edge, 409, "Last-Event-ID")


NOT_A_COUNT = ["2_0", "+2", "2.0", "٣", "0", "201", "-1"]


@SQLITE
@pytest.mark.parametrize("value", NOT_A_COUNT)
async def test_a_limit_is_ascii_digits_within_its_bounds(platform: Platform, value: str) -> None:
    # int() reads "2_0" as 20 and "+2" as 2: the schema says integer, the README digits.
    app = app_factory("intake")(platform)
    admin = headers_for("admin")
    refused = await asgi.call(app, "GET", "/tickets", headers=admin, params={"limit": value})
    assert_problem(refused, 422, "limit")
    streamed = await asgi.call(
        app, "GET", "/streams/events", headers=headers_for("auditor"), params={"batch": "1_0"}
    )
    assert_problem(streamed, 422, "batch")
    ok = await asgi.call(app, "GET", "/tickets", headers=admin, params={"limit": "200"})
    assert ok.status == 200, ok
    schema = app.openapi()["paths"]["/tickets"]["get"]["parameters"]
    (limit,) = [p for p in schema if p["name"] == "limit"]
    assert {"type": "integer", "minimum": 1, "maximum": 200, "default": 50}.items() <= limit[
        "schema"
    ].items()


@SQLITE
@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/quality/weekly", {"week": "9999-W52"}, "week"),  # its next Monday is year 10000
        ("/quality/weekly", {"week": "0000-W01"}, "week"),
        ("/quality/weekly", {"week": "2025-W53"}, "week"),  # 2025 has 52 weeks
        ("/quality/weekly", {"week": "٢٠٢٦-W47"}, "week"),
        ("/compliance/summary", {"month": "٢٠٢٦-11"}, "month"),
        ("/scorecards", {"month": "0000-01"}, "month"),
        ("/scorecards", {"month": "2026-13"}, "month"),
    ],
)
async def test_calendar_values_out_of_range_are_422(
    platform: Platform, path: str, params: dict[str, str], field: str
) -> None:
    async with service_client("feedback", platform, role="auditor") as client:
        response = await client.get(path, params=params)
        assert_problem(response, 422, field)
        assert "pattern" not in response.text  # said in words, not as a regular expression
        if field == "week":
            assert (await client.get(path, params={"week": "2026-W53"})).status_code == 200


@SQLITE
@pytest.mark.parametrize(
    "value",
    ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+23:59", "2026-11-20T10:00:00"],
)
async def test_times_without_zone_or_beyond_the_calendar_are_422(
    platform: Platform, value: str
) -> None:
    tid = await open_ticket(platform)
    async with service_client("intake", platform, role="auditor") as intake:
        assert_problem(await intake.get(f"/tickets/{tid}", params={"as_of": value}), 422, "as_of")
        assert_problem(
            await intake.get("/tickets", params={"created_to": value}), 422, "created_to"
        )
        export = await intake.get("/audit/export", params={"recorded_from": value})
        assert_problem(export, 422, "recorded_from")
    async with service_client("feedback", platform, role="auditor") as feedback:
        view = await feedback.get(f"/compliance/tickets/{tid}", params={"as_of": value})
        assert_problem(view, 422, "as_of")
    async with service_client("dispatch", platform, role="admin") as dispatch:
        body = {"appointment_start": value, "appointment_end": value}
        response = await dispatch.post(f"/tickets/{tid}/dispatch", json=body)
        assert_problem(response, 422, "appointment_start")


def forged(text: str) -> str:
    """A cursor of the services' shape (shared/readmodels/paging.py) around any text."""
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


# Cursors no list issues: not the shape, a time out of range or without its zone, an id
# part that is no row's id of that list (after a valid time: the `|` and what follows).
FOREIGN_CURSORS = (
    "zz",
    "not-base64-!",
    forged("0001-01-01T00:00:00+23:59|x"),
    forged("2026-11-20T10:00:00|00000000-0000-0000-0000-000000000000"),  # naive
    forged("2026-11-20T10:00:00+00:00|x\x00y"),
    forged("2026-11-20T10:00:00+00:00|" + "T" * 33),
)
TIME_THEN_GARBAGE = forged("2026-11-20T10:00:00+00:00|garbage")


@SQLITE
@pytest.mark.parametrize(
    ("service", "path", "role", "cursors"),
    [
        ("intake", "/tickets", "auditor", (*FOREIGN_CURSORS, TIME_THEN_GARBAGE)),
        ("dispatch", "/dispatch-queue", "auditor", (*FOREIGN_CURSORS, TIME_THEN_GARBAGE)),
        ("parts", "/requisitions", "auditor", (*FOREIGN_CURSORS, TIME_THEN_GARBAGE)),
        (
            "parts",
            "/returns",
            "auditor",
            (
                *FOREIGN_CURSORS,
                TIME_THEN_GARBAGE,
                forged(f"2026-11-20T10:00:00+00:00|tparts:{uuid.uuid4()}:x"),
                forged(f"2026-11-20T10:00:00+00:00|req:{uuid.uuid4()}:1"),
            ),
        ),
        # Ticket numbers are any text up to 32 characters (imported ones): `garbage` could
        # be one, so only the cursor's shape tells.
        ("feedback", "/compliance/tickets", "auditor", FOREIGN_CURSORS),
    ],
)
async def test_a_cursor_the_service_did_not_issue_is_422(
    platform: Platform, service: str, path: str, role: str, cursors: tuple[str, ...]
) -> None:
    async with service_client(service, platform, role=role) as client:
        for cursor in cursors:
            assert_problem(await client.get(path, params={"cursor": cursor}), 422, "cursor")


# --- class 2: a malformed filter is 422, on every list endpoint ---------------------------

# (service, path) → a malformed value per filter; anything the route reads as a filter
# must be here (the test below fails for a new, unlisted one).
MALFORMED_FILTERS: dict[tuple[str, str], dict[str, str]] = {
    ("intake", "/tickets"): {
        "phone": "abc",
        "region": "no such/region",
        "status": "lost",
        "urgency": "whenever",
        "created_from": "yesterday",
        "created_to": "2026-13-01T00:00:00Z",
        "cursor": "%%%",
        "limit": "٣",
    },
    ("intake", "/streams/events"): {
        "region": "e st",
        "types": "NoSuchEvent",
        "lastEventId": "abc",
        "from_position": "٣",
        "batch": "0",
    },
    ("intake", "/audit/export"): {
        "ticket_id": "abc",
        "region": "e st",
        "recorded_from": "soon",
        "recorded_to": "later",
        "format": "xml",
    },
    ("intake", "/personal-data/reads"): {
        "customer_id": "someone",
        "actor_subject": "",
        "since": "last week",
        "until": "2026-11-20T10:00:00",
        "after": "-1",
        "limit": "0",
    },
    ("intake", "/admin/parked"): {"status": "lost", "projection": "no such/one", "limit": "0"},
    ("dispatch", "/service-points"): {"region": "e st", "level": "top"},
    ("dispatch", "/technicians"): {
        "region": "e st",
        "service_point_id": "sp 1",
        "skill": "",
        "active": "perhaps",
    },
    ("dispatch", "/dispatch-queue"): {"region": "e st", "limit": "0", "cursor": "%%%"},
    ("parts", "/parts"): {"model": ""},
    ("parts", "/stock"): {"location": "a b", "part_number": "motor wm700"},
    ("parts", "/requisitions"): {
        "ticket_id": "abc",
        "location": "a b",
        "status": "lost",
        "limit": "0",
        "cursor": "%%%",
    },
    ("parts", "/returns"): {
        "service_point": "sp 1",
        "status": "lost",
        "ticket_id": "abc",
        "limit": "0",
        "cursor": "page-2",
    },
    ("parts", "/returns/summary"): {"service_point": "sp 1"},
    ("parts", "/replenishment"): {"location": "a b"},
    ("feedback", "/compliance/tickets"): {
        "region": "e st",
        "service_point": "sp 1",
        "technician": "t 1",
        "month": "2026-13",
        "compliant": "maybe",
        "failing": "everything",
        "cursor": "no\x1bnumber",  # imported numbers are any text: not a control character
        "limit": "0",
        "format": "xml",
    },
    ("feedback", "/compliance/summary"): {
        "group_by": "planet",
        "month": "2026-1",
        "region": "e st",
        "service_point": "sp 1",
        "format": "xml",
    },
    ("feedback", "/scorecards"): {"month": "11-2026", "service_point": "sp 1"},
    ("feedback", "/quality/weekly"): {"week": "2026-47"},
}


def list_routes() -> list[tuple[str, str, list[str]]]:
    """(service, path, query parameter names) of every GET route without path parameters."""
    found = []
    for service in SERVICES:
        document = app_factory(service)(None).openapi()
        for path, operations in document["paths"].items():
            get = operations.get("get")
            if get is None or "{" in path or path.startswith("/health/") or path == "/metrics":
                continue
            names = [p["name"] for p in get.get("parameters", []) if p["in"] == "query"]
            found.append((service, path, names))
    return found


def test_every_list_filter_has_a_malformed_example() -> None:
    missing = [
        f"{service} {path} ?{name}"
        for service, path, names in list_routes()
        for name in names
        if name not in MALFORMED_FILTERS.get((service, path), {})
    ]
    assert not missing, f"add a malformed value to MALFORMED_FILTERS: {missing}"


@SQLITE
async def test_a_malformed_filter_is_422_never_dropped(platform: Platform) -> None:
    await open_ticket(platform)
    wrong: list[str] = []
    for service, path, names in list_routes():
        app = app_factory(service)(platform)
        for name in names:
            value = MALFORMED_FILTERS[(service, path)][name]
            answer = await asgi.call(
                app, "GET", path, headers=headers_for("admin"), params={name: value}
            )
            fields = (
                [e["field"] for e in json.loads(answer.body).get("errors", [])]
                if answer.content_type.startswith(PROBLEM)
                else []
            )
            if answer.status != 422 or name not in fields:
                wrong.append(f"{service} {path}?{name}={value!r}: {answer.status} {fields}")
    assert not wrong, "\n".join(wrong)


@SQLITE
async def test_the_phone_filter_finds_only_that_phone(platform: Platform) -> None:
    mine = await open_ticket(platform)
    other = {**RECEIVE_EXAMPLE, "customer": {"name": "Wang Fang", "phone": "13900001111"}}
    async with service_client("intake", platform) as agent:
        assert (await agent.post("/tickets", json=other)).status_code == 201
    async with service_client("intake", platform, role="dispatcher") as dispatcher:
        found = await dispatcher.get("/tickets", params={"phone": "138-1234-5678"})
        assert [t["ticket_id"] for t in found.json()["items"]] == [mine]
        assert_problem(await dispatcher.get("/tickets", params={"phone": "abc"}), 422, "phone")
        assert_problem(await dispatcher.get("/tickets", params={"phone": ""}), 422, "phone")


@SQLITE
async def test_an_empty_filter_is_malformed_not_no_filter(platform: Platform) -> None:
    admin = headers_for("admin")
    for service, path, name, value in (
        ("intake", "/tickets", "phone", ""),
        ("intake", "/tickets", "region", ""),
        ("intake", "/streams/events", "types", ""),
        ("intake", "/streams/events", "types", " , "),
        ("dispatch", "/technicians", "skill", " "),
        ("parts", "/stock", "part_number", ""),
    ):
        app = app_factory(service)(platform)
        answer = await asgi.call(app, "GET", path, headers=admin, params={name: value})
        assert_problem(answer, 422, name)


@SQLITE
async def test_whitespace_around_any_query_value_is_not_part_of_it(platform: Platform) -> None:
    """README: codes, numbers and text are read trimmed in queries — months, weeks and
    choices too, not only the types that strip themselves; the answer is the untrimmed
    query's answer, and a link to the next page carries the trimmed values."""
    await open_ticket(platform)
    admin = headers_for("admin")
    for service, path, params in (
        ("feedback", "/compliance/summary", {"month": "2026-11", "group_by": "technician"}),
        ("feedback", "/compliance/tickets", {"month": "2026-11", "compliant": "true"}),
        ("feedback", "/compliance/tickets", {"failing": "satisfied", "format": "csv"}),
        ("feedback", "/scorecards", {"month": "2026-11"}),
        ("feedback", "/quality/weekly", {"week": "2026-W48"}),
        ("intake", "/tickets", {"region": "east", "limit": "1"}),
    ):
        app = app_factory(service)(platform)
        plain = await asgi.call(app, "GET", path, headers=admin, params=params)
        assert plain.status == 200, (path, plain)
        # Whitespace as the self-stripping types read it: NEL, no-break and ideographic too.
        for before, after in ((" ", "\t"), ("\u3000", "\x85"), ("\xa0", "\r\n")):
            padded = {name: f"{before}{value}{after}" for name, value in params.items()}
            answer = await asgi.call(app, "GET", path, headers=admin, params=padded)
            assert (answer.status, answer.body) == (plain.status, plain.body), (path, padded)
    await open_ticket(platform)
    app = app_factory("intake")(platform)
    answer = await asgi.call(app, "GET", "/tickets", headers=admin, params={"limit": " 1 "})
    assert answer.status == 200 and "limit=1" in answer.headers.get("link", ""), answer


# --- class 11: text a database cannot store, anywhere in a request -----------------------

BAD_TEXT = ["Li\x00Wei", "Li\ud800Wei", "Li\x1b[2JWei", "Li\bWei", "Li\x9b2JWei", "Li\x7fWei"]


@pytest.mark.parametrize(
    "text", BAD_TEXT, ids=["nul", "lone-surrogate", "escape", "backspace", "csi", "delete"]
)
async def test_invalid_text_is_422_naming_the_field_before_any_work(
    platform: Platform, text: str
) -> None:
    """On both databases: PostgreSQL's text cannot hold NUL (a 500 there before); a control
    character (a terminal acts on ESC) is refused the same way."""
    tid = await open_ticket(platform)
    before = await ledger_head(platform)
    app = app_factory("intake")(platform)
    agent = headers_for("call_center_agent")
    json_headers = {**agent, "content-type": "application/json"}

    def body_with(name: str) -> bytes:
        data = {**RECEIVE_EXAMPLE, "customer": {**RECEIVE_EXAMPLE["customer"], "name": name}}
        return json.dumps(data).encode()  # a lone surrogate travels as the escape \ud800

    answer = await asgi.call(app, "POST", "/tickets", headers=json_headers, body=body_with(text))
    assert_problem(answer, 422, "customer.name")
    keyed = {**json_headers, "Idempotency-Key": "k" + text}
    if "\x00" in text:  # headers are bytes: only NUL can travel in one
        answer = await asgi.call(app, "POST", "/tickets", headers=keyed, body=body_with("Li Wei"))
        assert_problem(answer, 422, "Idempotency-Key")
        answer = await asgi.call(
            app,
            "POST",
            "/tickets",
            headers={**json_headers, "X-Correlation-ID": text},
            body=body_with("Li Wei"),
        )
        assert_problem(answer, 422, "X-Correlation-ID")
        answer = await asgi.call(app, "GET", "/tickets", headers=agent, params={"region": text})
        assert_problem(answer, 422, "region")
        dispatch = app_factory("dispatch")(platform)
        answer = await asgi.call(
            dispatch, "GET", "/technicians/t%00x", headers=headers_for("admin")
        )
        assert_problem(answer, 422, "technician_id")
    # A key of the JSON body is text too.
    weird_key = json.dumps({**RECEIVE_EXAMPLE, text: 1}).encode()
    answer = await asgi.call(app, "POST", "/tickets", headers=json_headers, body=weird_key)
    assert answer.status == 422, answer
    # Nothing was recorded; the ticket is readable as before.
    assert await ledger_head(platform) == before
    async with service_client("intake", platform) as client:
        assert (await client.get(f"/tickets/{tid}")).status_code == 200


def test_only_bodies_that_may_hold_invalid_text_are_walked() -> None:
    """The raw-bytes screen before the walk: NUL and lone surrogates reach a parsed string
    only through these bytes, raw or escaped, in UTF-8, UTF-16 or UTF-32."""
    from shared.http.validation import may_hold_invalid_text

    for text in BAD_TEXT:
        for ascii_only in (True, False):
            raw = json.dumps({"name": text}, ensure_ascii=ascii_only)
            assert may_hold_invalid_text(raw.encode("utf-8", "surrogatepass"))
        for encoding in ("utf-16", "utf-32"):
            assert may_hold_invalid_text(json.dumps({"name": text}).encode(encoding))
    clean = json.dumps({"name": "李伟 Łukasz Ωmega", "n": 1}, ensure_ascii=False).encode()
    assert not may_hold_invalid_text(clean)


async def test_tabs_and_line_breaks_are_text(platform: Platform) -> None:
    """The control characters a note or an address may hold are kept as sent."""
    app = app_factory("intake")(platform)
    headers = {**headers_for("call_center_agent"), "content-type": "application/json"}
    symptom = "drum stops\n\tafter 5 min\r\nthen hums"
    data = {**RECEIVE_EXAMPLE, "problem": {**RECEIVE_EXAMPLE["problem"], "symptom": symptom}}
    answer = await asgi.call(
        app, "POST", "/tickets", headers=headers, body=json.dumps(data).encode()
    )
    assert answer.status == 201, answer


async def test_a_raw_utf8_surrogate_in_the_body_is_422(platform: Platform) -> None:
    """JSON parsing decodes with ``surrogatepass``: the bytes of a lone surrogate written
    raw (not as an escape) are refused too."""
    app = app_factory("intake")(platform)
    headers = {**headers_for("call_center_agent"), "content-type": "application/json"}
    data = {**RECEIVE_EXAMPLE, "customer": {**RECEIVE_EXAMPLE["customer"], "name": "Li\ud800"}}
    body = json.dumps(data, ensure_ascii=False).encode("utf-8", "surrogatepass")
    answer = await asgi.call(app, "POST", "/tickets", headers=headers, body=body)
    assert_problem(answer, 422, "customer.name")


async def test_a_token_subject_that_is_not_text_is_401(platform: Platform) -> None:
    """On both databases: the subject becomes the event's actor (a 500 on PostgreSQL)."""
    import jwt

    from tests.support.auth import TEST_JWT_SECRET

    before = await ledger_head(platform)
    app = app_factory("intake")(platform)
    for subject in ("agent\x00", "agent\ud800", "a" * 201):
        claims = {
            "sub": subject,
            "role": "call_center_agent",
            "iss": platform.settings.auth.issuer,
            "aud": platform.settings.auth.audience,
            "exp": 4_000_000_000,
        }
        token = jwt.encode(claims, TEST_JWT_SECRET, algorithm="HS256")
        answer = await asgi.call(
            app,
            "POST",
            "/tickets",
            headers={"Authorization": f"Bearer {token}", "content-type": "application/json"},
            body=json.dumps(RECEIVE_EXAMPLE).encode(),
        )
        assert answer.status == 401, (subject[:10], answer)
        assert answer.content_type.startswith(PROBLEM)
    assert await ledger_head(platform) == before


# --- class 12: database outages are 503, anything else a 500 problem ---------------------


def _locked() -> Exception:
    import sqlite3

    return sa.OperationalError(
        "BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked")
    )


def _disk_full() -> Exception:
    import sqlite3

    return sa.OperationalError(
        "INSERT INTO events", {}, sqlite3.OperationalError("database or disk is full")
    )


def _postgres_disk_full() -> Exception:
    from asyncpg.exceptions import DiskFullError

    return sa.OperationalError("INSERT INTO events", {}, DiskFullError("could not extend file"))


def _invalidated() -> Exception:
    error = sa.DBAPIError("SELECT 1", {}, Exception("server closed the connection"))
    error.connection_invalidated = True
    return error


def _asyncpg_gone() -> Exception:
    from asyncpg.exceptions import ConnectionDoesNotExistError

    return ConnectionDoesNotExistError("connection was closed in the middle of operation")


def _asyncpg_busy() -> Exception:
    from asyncpg.exceptions import InterfaceError

    return sa.InterfaceError("SELECT 1", {}, InterfaceError("another operation is in progress"))


def _asyncpg_mid_query() -> Exception:
    from asyncpg.exceptions import InternalClientError

    return InternalClientError("cannot switch to state 15; another operation (2) is in progress")


def _pool_exhausted() -> Exception:
    return sa.TimeoutError("QueuePool limit of size 10 overflow 20 reached")


def _refused() -> Exception:
    return ConnectionRefusedError(111, "Connect call failed ('127.0.0.1', 5432)")


@SQLITE
@pytest.mark.parametrize(
    "outage",
    [
        _locked,
        _disk_full,
        _postgres_disk_full,
        _invalidated,
        _asyncpg_gone,
        _asyncpg_busy,
        _asyncpg_mid_query,
        _pool_exhausted,
        _refused,
    ],
    ids=[
        "sqlite-locked",
        "sqlite-disk-full",
        "postgres-disk-full",
        "invalidated",
        "asyncpg-closed",
        "asyncpg-busy",
        "asyncpg-mid-query",
        "pool",
        "refused",
    ],
)
async def test_a_database_outage_is_503_with_retry_after(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, outage: Any
) -> None:
    def unavailable(*_args: Any, **_kwargs: Any) -> Any:
        raise outage()

    monkeypatch.setattr(platform.db, "read", unavailable)
    monkeypatch.setattr(platform.db, "write", unavailable)
    async with service_client("intake", platform, role="dispatcher") as client:
        for response in (
            await client.get("/tickets"),
            await client.post(
                "/tickets/00000000-0000-4000-8000-000000000000/diagnosis",
                json={"category": "wear", "complexity": "simple", "resolution_path": "on_site"},
            ),
        ):
            assert response.status_code == 503, response.text
            assert response.headers["content-type"].startswith(PROBLEM)
            assert int(response.headers["retry-after"]) >= 1


async def test_an_unreachable_database_is_503_not_a_plain_500(tmp_path: Any) -> None:
    from shared.app.config import Settings
    from tests.support.auth import TEST_AUTH
    from tests.support.ports import free_port

    url = f"postgresql+asyncpg://nobody@127.0.0.1:{free_port()}/nothing"
    platform = Platform.from_settings(Settings(database_url=url, data_dir=tmp_path, auth=TEST_AUTH))
    try:
        async with service_client("intake", platform, role="auditor") as client:
            response = await client.get("/tickets")
        assert response.status_code == 503, response.text
        assert response.headers["content-type"].startswith(PROBLEM)
        assert "retry-after" in response.headers
    finally:
        await platform.close()


async def test_a_server_that_accepts_and_never_answers_is_an_outage_not_a_bug() -> None:
    """asyncpg's connect timeout says only TimeoutError: the engine names it an outage
    (503 on the APIs, the CLI's exit 3), as it does a refused connection."""
    import socket

    from shared.app.cli import explained_failure
    from shared.eventstore.db import DatabaseUnavailable, async_engine

    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        port = silent.getsockname()[1]
        engine = async_engine(
            f"postgresql+asyncpg://nobody@127.0.0.1:{port}/nothing", connect_args={"timeout": 0.3}
        )
        try:
            with pytest.raises(DatabaseUnavailable) as raised:
                async with engine.connect():
                    pass
        finally:
            await engine.dispose()
    explained = explained_failure(raised.value)
    assert explained is not None and explained[0] == 3


@SQLITE
async def test_an_unhandled_error_is_a_500_problem_that_says_nothing_of_it(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> Any:
        raise RuntimeError("secret internals: customer 13812345678")

    monkeypatch.setattr(platform.db, "read", broken)
    app = app_factory("intake")(platform)
    # Answered inside the app (nothing re-raised to the server, which would drop the
    # connection), and inside the other middlewares: their headers are on the answer.
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=True)
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        response = await client.get("/tickets", headers=headers_for("auditor"))
    assert response.status_code == 500
    assert response.headers["content-type"].startswith(PROBLEM)
    assert "secret" not in response.text and "1381234" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    assert uuid.UUID(response.headers["x-correlation-id"])


# --- the OpenAPI documents: problem answers and header formats ---------------------------


def _pydantic_only_keys(node: Any) -> list[str]:
    """Bounds spelled as pydantic's ``ge``/``le``/``gt``/``lt`` in a schema."""
    found: list[str] = []
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found += [k for k in ("ge", "le", "gt", "lt") if k in item and "type" in item]
            pending += item.values()
        elif isinstance(item, list):
            pending += item
    return found


def test_openapi_documents_describe_problems_and_header_formats() -> None:
    for service in SERVICES:
        app = app_factory(service)(None)
        document = app.openapi()
        assert "HTTPValidationError" not in document["components"]["schemas"]
        assert not _pydantic_only_keys(document), service  # not JSON Schema: unenforced
        for path, operations in document["paths"].items():
            for method, operation in operations.items():
                where = f"{service} {method.upper()} {path}"
                responses = operation["responses"]
                for status, answer in responses.items():
                    if status[0] in "45" and not path.startswith("/health/"):
                        assert list(answer["content"]) == [PROBLEM], (where, status)
                if path.startswith("/health/"):
                    continue
                assert "503" in responses, where
                assert "Retry-After" in responses["503"]["headers"], where
                if operation.get("security"):
                    assert {"401", "403"} <= set(responses), where
                reads = [p for p in operation["parameters"] if p["name"] != "X-Correlation-ID"]
                if reads or "requestBody" in operation:
                    assert "422" in responses, where
                if "requestBody" in operation:
                    assert {"400", "413", "409"} <= set(responses), where
                if "{" in path:
                    assert "404" in responses, where
                headers = {
                    p["name"]: p["schema"] for p in operation["parameters"] if p["in"] == "header"
                }
                # Any value is taken (one not a UUID replaced): no format to refuse by.
                assert headers["X-Correlation-ID"] == {"type": "string"}, where
                assert not any("anyOf" in h for h in headers.values()), where  # never null
                if "If-Match" in headers:
                    assert headers["If-Match"]["pattern"], where
                if "Idempotency-Key" in headers:
                    assert headers["Idempotency-Key"]["maxLength"] == 200, where
                if "Last-Event-ID" in headers:
                    assert headers["Last-Event-ID"]["pattern"], where


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (b'{"a": 1, "a": 2}', "a"),
        (b'{"address": {"region": "east", "region": "west"}}', "address.region"),
        (b'{"parts": [{"x": 1}, {"x": 1, "x": 2}]}', "parts.1.x"),
        (b'{"a": 1}', None),
    ],
)
def test_a_key_given_twice_is_named_by_its_path(body: bytes, field: str | None) -> None:
    from shared.http.validation import duplicate_key_path

    assert duplicate_key_path(body) == field


async def test_a_nested_key_given_twice_is_422_naming_its_path(platform: Platform) -> None:
    address = json.dumps(RECEIVE_EXAMPLE["address"])[:-1] + ', "region": "west"}'
    body = json.dumps({**RECEIVE_EXAMPLE, "address": "@"}).replace('"@"', address)
    async with service_client("intake", platform) as agent:
        response = await agent.post(
            "/tickets", content=body, headers={"Content-Type": "application/json"}
        )
    assert response.status_code == 422, response.text
    assert [e["field"] for e in response.json()["errors"]] == ["address.region"]


@SQLITE
async def test_a_field_of_the_wrong_form_is_said_in_words_not_as_a_regular_expression(
    platform: Platform,
) -> None:
    """A phone number Excel made `1.3812345678E10`: the agent reads what a phone number
    is, not `^\\+?[0-9][0-9 \\-]{5,19}[0-9]$`."""
    body = {**RECEIVE_EXAMPLE, "customer": {"name": "Li Wei", "phone": "1.3812345678E10"}}
    body["address"] = {**RECEIVE_EXAMPLE["address"], "region": "East Region!"}
    async with service_client("intake", platform) as agent:
        response = await agent.post("/tickets", json=body)
    assert response.status_code == 422
    said = {e["field"]: e["message"] for e in response.json()["errors"]}
    assert said["customer.phone"].startswith("expected a phone number: 7 to 21 digits")
    assert said["address.region"].startswith("expected a region code")
    assert "pattern" not in response.text
