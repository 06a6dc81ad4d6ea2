"""Who may call what: every route of every service × every role (+ no credentials), and
what a caller sees of other regions and other technicians' tickets.

Every route must have a row in ``POLICY``: a route without one fails the matrix, so each
new endpoint declares who may call it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.platform import Platform
from shared.app.registry import SERVICES, app_factory
from shared.app.subscribe import AccessRefused, subscribe_http
from shared.kernel.events.tickets import TicketDispatched
from tests.support.auth import headers_for, token_for
from tests.support.clients import service_client
from tests.support.lifecycle import append_ticket_events
from tests.support.servers import serve_app

ROLES = (
    "call_center_agent",
    "dispatcher",
    "technician",
    "parts_clerk",
    "customer_relations",
    "regional_center",
    "auditor",
    "admin",
    "privacy_officer",
)
OPEN = "open"  # no credentials needed
READERS = frozenset(
    {
        "call_center_agent",
        "dispatcher",
        "technician",
        "customer_relations",
        "regional_center",
        "auditor",
        "admin",
    }
)

ADMIN = frozenset({"admin"})
# Those who oversee a region's work (a regional token sees only its own region).
SUPERVISORS = frozenset({"dispatcher", "regional_center", "auditor", "admin"})
FIELD = frozenset({"technician", "dispatcher", "admin"})
PARTS_READERS = SUPERVISORS | {"parts_clerk", "technician"}
# Customers' personal-data requests (docs/personal-data.md).
PRIVACY = frozenset({"privacy_officer", "admin"})

# (method, path) → the roles allowed (or OPEN). Add a row for every new route.
POLICY: dict[tuple[str, str], frozenset[str] | str] = {
    ("GET", "/health/live"): OPEN,
    ("GET", "/health/ready"): OPEN,
    ("HEAD", "/health/live"): OPEN,  # uptime monitors probe with HEAD
    ("HEAD", "/health/ready"): OPEN,
    # intake
    ("POST", "/tickets"): frozenset({"call_center_agent"}),
    ("POST", "/tickets/{ticket_id}/diagnosis"): frozenset({"call_center_agent", "dispatcher"}),
    ("PATCH", "/tickets/{ticket_id}/contact"): frozenset(
        {"call_center_agent", "dispatcher", "customer_relations"}
    ),
    ("GET", "/tickets/{ticket_id}"): READERS,
    ("GET", "/tickets"): READERS,
    ("GET", "/tickets/{ticket_id}/history"): READERS,
    ("POST", "/customers/lookup"): PRIVACY,
    ("GET", "/customers/{customer_id}/data"): PRIVACY,
    ("POST", "/customers/{customer_id}/erasure"): PRIVACY,
    ("PUT", "/customers/{customer_id}/legal-hold"): PRIVACY,
    ("GET", "/personal-data/reads"): frozenset({"privacy_officer", "auditor", "admin"}),
    # shared routers
    ("GET", "/streams/events"): frozenset({"regional_center", "dispatcher", "auditor", "admin"}),
    ("GET", "/audit/export"): frozenset({"auditor", "regional_center", "admin"}),
    ("GET", "/metrics"): OPEN,  # Prometheus scrape; restrict at the network level
    ("GET", "/admin/parked"): ADMIN,
    # dispatch: the network is the admin's; dispatchers assign; technicians check in/repair
    ("POST", "/service-points"): ADMIN,
    ("PUT", "/service-points/{point_id}"): ADMIN,
    ("GET", "/service-points"): SUPERVISORS,
    ("GET", "/service-points/{point_id}"): SUPERVISORS,
    ("POST", "/technicians"): ADMIN,
    ("PUT", "/technicians/{technician_id}"): ADMIN,
    ("POST", "/technicians/{technician_id}/deactivation"): ADMIN,
    ("POST", "/technicians/{technician_id}/activation"): ADMIN,
    ("GET", "/technicians"): SUPERVISORS,
    ("GET", "/technicians/{technician_id}"): SUPERVISORS | {"technician"},
    ("GET", "/technicians/{technician_id}/assignments"): SUPERVISORS | {"technician"},
    ("GET", "/dispatch-queue"): SUPERVISORS,
    ("GET", "/tickets/{ticket_id}/candidates"): frozenset({"dispatcher", "admin"}),
    ("POST", "/tickets/{ticket_id}/dispatch"): frozenset({"dispatcher", "admin"}),
    ("GET", "/tickets/{ticket_id}/dispatches"): SUPERVISORS,
    ("POST", "/tickets/{ticket_id}/visit"): FIELD,
    ("POST", "/tickets/{ticket_id}/repair"): FIELD,
    # dispatch, SLA (docs/sla.md): terms are the admin's; who works a ticket pauses it
    ("PUT", "/calendars/{calendar_id}"): ADMIN,
    ("POST", "/calendars/{calendar_id}/ics"): ADMIN,
    ("GET", "/calendars"): SUPERVISORS,
    ("GET", "/calendars/{calendar_id}"): SUPERVISORS,
    ("PUT", "/sla-policies/{policy_id}"): ADMIN,
    ("GET", "/sla-policies"): SUPERVISORS,
    ("GET", "/sla-policies/{policy_id}"): SUPERVISORS,
    ("POST", "/tickets/{ticket_id}/sla/pause"): FIELD,
    ("POST", "/tickets/{ticket_id}/sla/resume"): FIELD,
    ("POST", "/tickets/{ticket_id}/sla/re-evaluation"): frozenset({"dispatcher", "admin"}),
    ("GET", "/tickets/{ticket_id}/sla"): SUPERVISORS | {"technician"},
    ("POST", "/sla/what-if"): ADMIN,
    # parts: catalogue and locations are the admin's; clerks move stock at their location
    ("PUT", "/parts/{part_number}"): ADMIN,
    ("GET", "/parts"): PARTS_READERS,
    ("GET", "/parts/{part_number}"): PARTS_READERS,
    ("PUT", "/locations/{location_id}"): ADMIN,
    ("GET", "/locations"): PARTS_READERS,
    ("GET", "/locations/{location_id}"): PARTS_READERS,
    ("POST", "/stock/receipts"): frozenset({"parts_clerk", "admin"}),
    ("POST", "/stock/adjustments"): ADMIN,
    ("GET", "/stock"): PARTS_READERS,
    ("POST", "/requisitions"): frozenset({"technician", "parts_clerk", "admin"}),
    ("POST", "/requisitions/{requisition_id}/issue"): frozenset({"parts_clerk", "admin"}),
    ("POST", "/requisitions/{requisition_id}/cancel"): frozenset(
        {"technician", "parts_clerk", "admin"}
    ),
    ("POST", "/requisitions/{requisition_id}/return"): frozenset(
        {"technician", "parts_clerk", "admin"}
    ),
    ("GET", "/requisitions/{requisition_id}"): PARTS_READERS,
    ("GET", "/requisitions"): PARTS_READERS,
    ("POST", "/returns"): frozenset({"parts_clerk", "admin"}),
    ("GET", "/returns"): PARTS_READERS,
    ("GET", "/returns/summary"): PARTS_READERS,
    ("GET", "/replenishment"): PARTS_READERS,
    # feedback: customer relations closes the loop; views for those who supervise it
    ("POST", "/tickets/{ticket_id}/follow-ups"): frozenset({"customer_relations", "admin"}),
    ("POST", "/tickets/{ticket_id}/complaints"): frozenset(
        {"customer_relations", "call_center_agent", "admin"}
    ),
    ("GET", "/compliance/tickets"): SUPERVISORS,
    ("GET", "/compliance/tickets/{ticket_id}"): SUPERVISORS | {"customer_relations"},
    ("GET", "/compliance/summary"): SUPERVISORS,
    ("GET", "/scorecards"): SUPERVISORS,
    ("POST", "/scorecards/items"): ADMIN,  # auditors write nothing
    ("GET", "/quality/weekly"): SUPERVISORS,
    # imports of the replaced system's history: each on the service owning the kind
    **{
        ("POST", f"/imports/{kind}"): ADMIN for kind in ("tickets", "service-points", "technicians")
    },
    **{("POST", f"/imports/{kind}"): ADMIN for kind in ("locations", "parts", "stock", "usage")},
}


# (method, path) → the scope a token limited by `scope` must carry (docs/access-control.md).
def _scope(method: str, path: str) -> str | None:
    if POLICY.get((method, path)) == OPEN:
        return None
    write = method != "GET"
    if path.startswith("/imports/"):
        return "imports:write"
    if path.startswith(("/service-points", "/technicians")) and not path.endswith("assignments"):
        return "network:write" if write else "network:read"
    if path.startswith(("/calendars", "/sla-policies", "/sla/")):
        return "sla:write" if write and path != "/sla/what-if" else "sla:read"
    if path.startswith(("/parts", "/locations", "/stock", "/requisitions", "/returns", "/rep")):
        return "parts:write" if write else "parts:read"
    if path.startswith(("/compliance", "/quality")) or path == "/scorecards":
        return "reports:read"
    if path == "/scorecards/items":
        return "reports:write"
    if path.startswith("/customers"):
        return "customers:write" if write and path != "/customers/lookup" else "customers:read"
    return {
        "/personal-data/reads": "customers:read",
        "/streams/events": "events:read",
        "/audit/export": "audit:export",
        "/admin/parked": "admin:operations",
    }.get(path, "tickets:write" if write else "tickets:read")


SCOPES = {route: _scope(*route) for route in POLICY}

# Requests that would not end when allowed (SSE) are probed with a query that fails
# validation after the access check: allowed → 422, denied → 403.
PROBE_PARAMS: dict[tuple[str, str], dict[str, str]] = {
    ("GET", "/streams/events"): {"types": "NoSuchEvent"},
}


def _walk(routes: list[Any], prefix: str = "") -> list[tuple[str, str]]:
    """(method, path) of every API route, through included routers (FastAPI ≥ 0.16x keeps
    them as lazily-resolved branches instead of copying the routes into the app)."""
    found = []
    for route in routes:
        if isinstance(route, APIRoute):
            found += [(m, prefix + route.path) for m in sorted(route.methods - {"OPTIONS"})]
        elif hasattr(route, "original_router"):
            found += _walk(route.original_router.routes, prefix + route.include_context.prefix)
    return found


def every_route() -> list[tuple[str, str, str]]:
    found = []
    for service in SERVICES:
        app = app_factory(service)(None)
        routes = _walk(app.routes)
        documented = {
            (method.upper(), path)
            for path, operations in app.openapi()["paths"].items()
            for method in operations
        }
        # The walk must see at least what the OpenAPI document shows (and hidden routes).
        assert documented <= set(routes), documented - set(routes)
        found += [(service, method, path) for method, path in routes]
    assert found, "no routes found"
    return found


def test_every_route_has_a_policy_row() -> None:
    missing = sorted({(m, p) for _, m, p in every_route()} - set(POLICY))
    assert not missing, f"routes without a row in POLICY (declare who may call them): {missing}"


def concrete(path: str) -> str:
    while "{" in path:
        start, end = path.index("{"), path.index("}")
        path = path[:start] + str(uuid.uuid4()) + path[end + 1 :]
    return path


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_matrix_every_route_every_role(platform: Platform) -> None:
    failures: list[str] = []
    checked = 0
    apps = {service: app_factory(service)(platform) for service in SERVICES}
    for service, method, path in every_route():
        allowed = POLICY.get((method, path))
        if allowed is None:
            continue  # reported by test_every_route_has_a_policy_row
        transport = httpx.ASGITransport(app=apps[service])
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for role in (None, *ROLES):
                headers = headers_for(role) if role else {}
                response = await client.request(
                    method,
                    concrete(path),
                    params=PROBE_PARAMS.get((method, path)),
                    json={} if method in {"POST", "PUT", "PATCH"} else None,
                    headers=headers,
                )
                status = response.status_code
                checked += 1
                if allowed == OPEN or (role is not None and role in allowed):
                    ok = status not in (401, 403)
                    want = "not 401/403"
                elif role is None:
                    ok = status == 401 and "Bearer" in response.headers.get("www-authenticate", "")
                    want = "401 with WWW-Authenticate: Bearer"
                else:
                    body = response.json()
                    ok = status == 403 and body.get("required_roles") == sorted(allowed)
                    want = "403 naming the allowed roles"
                if not ok:
                    failures.append(f"{service} {method} {path} as {role}: {status}, want {want}")
    assert not failures, "\n".join(failures)
    assert checked == len(every_route()) * (len(ROLES) + 1)


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_token_limited_to_other_scopes_is_refused_on_every_route(
    platform: Platform,
) -> None:
    """docs/access-control.md: a token limited to scopes without the endpoint's is 403
    naming it — on every service, not only intake; with the scope it passes the check."""
    failures: list[str] = []
    apps = {service: app_factory(service)(platform) for service in SERVICES}
    for service, method, path in every_route():
        allowed, scope = POLICY.get((method, path)), SCOPES.get((method, path))
        if allowed is None or allowed == OPEN:
            continue
        role = sorted(allowed)[0]
        transport = httpx.ASGITransport(app=apps[service])
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            for scopes, refused in ((["nothing:else"], True), ([str(scope)], False)):
                token = token_for(role, scopes=scopes)
                response = await client.request(
                    method,
                    concrete(path),
                    params=PROBE_PARAMS.get((method, path)),
                    json={} if method in {"POST", "PUT", "PATCH"} else None,
                    headers={"Authorization": f"Bearer {token}"},
                )
                body = response.json() if refused else {}
                if refused and not (
                    response.status_code == 403 and body.get("required_scope") == scope
                ):
                    failures.append(f"{method} {path} {scopes}: {response.status_code} {body}")
                if not refused and response.status_code in (401, 403):
                    failures.append(f"{method} {path} {scopes}: {response.status_code}")
    assert not failures, "\n".join(failures)


async def test_docs_and_openapi_stay_open(intake: httpx.AsyncClient) -> None:
    async with httpx.AsyncClient(transport=intake._transport, base_url="http://t") as anonymous:
        assert (await anonymous.get("/openapi.json")).status_code == 200
        assert (await anonymous.get("/docs")).status_code == 200
        schemes = (await anonymous.get("/openapi.json")).json()["components"]["securitySchemes"]
    assert {"HTTPBearer", "APIKeyHeader"} <= set(schemes)


# --- what each caller sees --------------------------------------------------------------


def in_region(region: str) -> dict[str, Any]:
    body = {**RECEIVE_EXAMPLE, "address": {**RECEIVE_EXAMPLE["address"], "region": region}}
    body["product"] = {**RECEIVE_EXAMPLE["product"], "serial_number": f"SN-{uuid.uuid4().hex[:8]}"}
    return body


async def open_in(platform: Platform, region: str) -> str:
    async with service_client("intake", platform, subject="agent-7") as agent:
        response = await agent.post("/tickets", json=in_region(region))
        assert response.status_code == 201, response.text
        return str(response.json()["ticket_id"])


async def test_regional_callers_see_nothing_of_other_regions(platform: Platform) -> None:
    east = await open_in(platform, "east")
    west = await open_in(platform, "west")
    async with service_client("intake", platform, role="regional_center", region="east") as rc:
        assert (await rc.get(f"/tickets/{east}")).status_code == 200
        for path in (f"/tickets/{west}", f"/tickets/{west}/history"):
            response = await rc.get(path)
            # Not 403: the other region's ticket does not exist for this caller.
            assert response.status_code == 404, path
        listed = (await rc.get("/tickets")).json()["items"]
        assert [t["ticket_id"] for t in listed] == [east]
        assert (await rc.get("/tickets", params={"region": "west"})).json()["items"] == []
        export = await rc.get("/audit/export")
        assert export.status_code == 200
        assert east in export.text and west not in export.text
        assert (await rc.get("/audit/export", params={"region": "west"})).status_code == 404
        assert (await rc.get("/audit/export", params={"ticket_id": west})).status_code == 404
        assert (await rc.get("/streams/events", params={"region": "west"})).status_code == 404
    async with service_client("intake", platform, role="dispatcher", region="east") as disp:
        diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
        assert (await disp.post(f"/tickets/{west}/diagnosis", json=diagnosis)).status_code == 404
        fix = {"reason": "typo", "customer": {"name": "Li Wei", "phone": "13900000000"}}
        assert (await disp.patch(f"/tickets/{west}/contact", json=fix)).status_code == 404
        assert (await disp.post(f"/tickets/{east}/diagnosis", json=diagnosis)).status_code == 200
    # A region on the token confines any role, also one that sees every region without it.
    async with service_client(
        "intake", platform, role="customer_relations", region="east"
    ) as relations:
        assert (await relations.get(f"/tickets/{west}")).status_code == 404
        assert (await relations.get(f"/tickets/{east}")).status_code == 200
        listed = (await relations.get("/tickets")).json()["items"]
        assert [t["ticket_id"] for t in listed] == [east]
    # Nor does it write outside it: what it would create elsewhere is 403 naming `region`.
    async with service_client("intake", platform, region="east") as agent:
        refused = await agent.post("/tickets", json=in_region("west"))
        assert refused.status_code == 403, refused.text
        assert refused.json()["errors"][0]["field"] == "region"
    async with service_client("dispatch", platform, role="admin", region="east") as admin:
        north = {"id": "rc-north", "name": "N", "level": "regional_center", "region": "north"}
        assert (await admin.post("/service-points", json=north)).status_code == 403
    async with service_client("intake", platform, role="auditor") as auditor:
        listed = {t["ticket_id"] for t in (await auditor.get("/tickets")).json()["items"]}
        assert listed == {east, west}


async def test_regional_stream_carries_only_its_region(platform: Platform) -> None:
    await open_in(platform, "west")
    east = await open_in(platform, "east")
    await open_in(platform, "west")
    second_east = await open_in(platform, "east")
    seen: list[dict[str, Any]] = []
    async with serve_app(app_factory("intake")(platform)) as url:
        # No region asked for: the token's region is forced.
        await subscribe_http(
            url,
            region=None,
            types=[],
            from_beginning=True,
            position_file=None,
            emit=seen.append,
            max_events=2,
            headers=headers_for("regional_center", region="east"),
        )
        with pytest.raises(AccessRefused):
            await subscribe_http(
                url,
                region="west",
                types=[],
                from_beginning=True,
                position_file=None,
                emit=seen.append,
                max_events=1,
                headers=headers_for("regional_center", region="east"),
            )
    assert [e["stream_id"] for e in seen] == [east, second_east]
    # Events carry personal data sealed (docs/personal-data.md): never the clear values.
    text = json.dumps(seen)
    assert RECEIVE_EXAMPLE["customer"]["phone"] not in text
    assert RECEIVE_EXAMPLE["address"]["line"] not in text
    assert seen[0]["payload"]["customer"]["phone"].startswith("pd1.")


async def test_technician_sees_only_own_assignments(platform: Platform) -> None:
    mine = await open_in(platform, "east")
    other = await open_in(platform, "east")
    now = datetime(2026, 11, 20, 9, tzinfo=UTC)
    await append_ticket_events(
        platform,
        mine,
        [
            TicketDispatched(
                region="east",
                service_point_id="sp-1",
                technician_id="tech-9",
                appointment_start=now,
                appointment_end=now + timedelta(hours=2),
                reason="nearest",
            )
        ],
    )
    async with service_client("intake", platform, role="technician", subject="tech-9") as tech:
        assert (await tech.get(f"/tickets/{mine}")).status_code == 200
        assert (await tech.get(f"/tickets/{other}")).status_code == 404
        assert (await tech.get(f"/tickets/{other}/history")).status_code == 404
        assert [t["ticket_id"] for t in (await tech.get("/tickets")).json()["items"]] == [mine]
        full = (await tech.get(f"/tickets/{mine}")).json()
        assert full["customer_phone"] == "13812345678"  # the technician calls the customer
    async with service_client("intake", platform, role="technician", subject="tech-2") as tech:
        assert (await tech.get(f"/tickets/{mine}")).status_code == 404
        assert (await tech.get("/tickets")).json()["items"] == []


async def test_actor_on_events_is_the_token_subject_and_role(platform: Platform) -> None:
    async with service_client("intake", platform, subject="agent-42") as agent:
        created = await agent.post("/tickets", json=in_region("east"))
        tid = created.json()["ticket_id"]
        # The body cannot name an actor.
        forged = await agent.post("/tickets", json={**in_region("east"), "actor": "boss"})
        assert forged.status_code == 422
    async with service_client(
        "intake", platform, role="dispatcher", subject="disp-5", region="east"
    ) as disp:
        diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
        assert (await disp.post(f"/tickets/{tid}/diagnosis", json=diagnosis)).status_code == 200
    events = await platform.db.read(lambda c: platform.store.read_stream(c, tid))
    assert [(e.actor.subject, e.actor.role) for e in events] == [
        ("agent-42", "call_center_agent"),
        ("disp-5", "dispatcher"),
    ]


async def test_personal_data_is_masked_for_roles_that_do_not_need_it(
    platform: Platform,
) -> None:
    tid = await open_in(platform, "east")
    phone = RECEIVE_EXAMPLE["customer"]["phone"]
    line = RECEIVE_EXAMPLE["address"]["line"]
    for role, full in (
        ("call_center_agent", False),
        ("regional_center", False),
        ("auditor", False),
        ("dispatcher", True),
        ("customer_relations", True),
        ("admin", True),
    ):
        async with service_client("intake", platform, role=role, region="east") as client:
            view = (await client.get(f"/tickets/{tid}")).json()
            history = (await client.get(f"/tickets/{tid}/history")).json()
        payload = history["events"][0]["payload"]
        if full:
            assert view["customer_phone"] == phone and view["address_line"] == line, role
            assert payload["customer"]["phone"] == phone, role
        else:
            assert view["customer_phone"] != phone and line not in view["address_line"], role
            assert payload["customer"]["phone"] != phone, role
            assert payload["address"]["line"] == "***", role


async def test_idempotency_keys_are_per_caller(platform: Platform) -> None:
    """Another caller reusing a key gets its own outcome, never the first caller's answer."""
    body = in_region("east")
    async with service_client("intake", platform, subject="agent-a") as a:
        first = await a.post("/tickets", json=body, headers={"Idempotency-Key": "k-1"})
        replay = await a.post("/tickets", json=body, headers={"Idempotency-Key": "k-1"})
    async with service_client("intake", platform, subject="agent-b") as b:
        other = await b.post("/tickets", json=body, headers={"Idempotency-Key": "k-1"})
    assert replay.json()["ticket_id"] == first.json()["ticket_id"]
    assert other.status_code == 201 and "idempotent-replayed" not in other.headers
    assert other.json()["ticket_id"] != first.json()["ticket_id"]


# --- reach and personal data in the work lists --------------------------------------------

DIAGNOSIS = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}


async def diagnosed_in(platform: Platform, region: str) -> str:
    tid = await open_in(platform, region)
    async with service_client("intake", platform) as agent:
        response = await agent.post(f"/tickets/{tid}/diagnosis", json=DIAGNOSIS)
        assert response.status_code == 200, response.text
    return tid


async def test_work_lists_mask_the_street_for_roles_that_see_it_masked(
    platform: Platform,
) -> None:
    from tests.support.dispatch_network import build_network
    from tests.support.lifecycle import dispatch_ticket

    async with service_client("dispatch", platform, role="admin") as admin:
        await build_network(admin)
    await diagnosed_in(platform, "east")  # waits in the dispatch queue
    assigned = await diagnosed_in(platform, "east")
    await dispatch_ticket(platform, assigned, service_point_id="sp-east-1", technician_id="t-a")
    line = RECEIVE_EXAMPLE["address"]["line"]
    for role, subject, full in (
        ("regional_center", None, False),
        ("auditor", None, False),
        ("dispatcher", None, True),
        ("admin", None, True),
        ("technician", "t-a", True),
    ):
        credentials = {"region": "east"} if role == "regional_center" else {}
        if subject:
            credentials["subject"] = subject
        async with service_client("dispatch", platform, role=role, **credentials) as client:
            lists = [(await client.get("/technicians/t-a/assignments")).json()["items"]]
            if role != "technician":
                lists.append((await client.get("/dispatch-queue")).json()["items"])
        for items in lists:
            assert items, role
            for item in items:
                assert (item["address_line"] == line) is full, (role, item["address_line"])
                if not full:
                    assert item["address_line"] == "***", role


async def test_roles_that_see_the_phone_masked_may_not_search_by_it(
    platform: Platform,
) -> None:
    tid = await open_in(platform, "east")
    phone = RECEIVE_EXAMPLE["customer"]["phone"]
    for role in ROLES:
        if role in ("parts_clerk", "privacy_officer"):
            continue  # read no tickets at all (the matrix)
        async with service_client("intake", platform, role=role, region="east") as client:
            response = await client.get("/tickets", params={"phone": phone})
        if role in {"call_center_agent", "regional_center", "auditor"}:
            assert response.status_code == 403, role
            assert response.headers["content-type"].startswith("application/problem+json")
            assert [e["field"] for e in response.json()["errors"]] == ["phone"], role
        else:
            assert response.status_code == 200, (role, response.text)
            expected = [] if role == "technician" else [tid]  # not assigned to this one
            assert [t["ticket_id"] for t in response.json()["items"]] == expected, role


async def test_technician_lists_only_returns_of_its_own_tickets(platform: Platform) -> None:
    from services.parts.reactors import RepairReactor
    from tests.support.lifecycle import dispatch_ticket, repair_ticket, warranty_part
    from tests.test_parts import build_network

    async with service_client("parts", platform, role="admin") as admin:
        await build_network(admin)
    tickets = {}
    for technician in ("tech-a", "tech-b"):
        tid = await open_in(platform, "east")
        await dispatch_ticket(platform, tid, service_point_id="SP-HZ-01", technician_id=technician)
        await repair_ticket(platform, tid, [warranty_part()], technician_id=technician)
        tickets[technician] = tid
    await platform.runner.catch_up(RepairReactor(platform))
    async with service_client("parts", platform, role="admin") as admin:
        everything = (await admin.get("/returns")).json()
        assert {r["ticket_id"] for r in everything} == set(tickets.values())
    for technician, tid in tickets.items():
        async with service_client("parts", platform, role="technician", subject=technician) as tech:
            mine = (await tech.get("/returns")).json()
            assert [r["ticket_id"] for r in mine] == [tid], technician
            other = next(t for t in tickets.values() if t != tid)
            asked = await tech.get("/returns", params={"ticket_id": other})
            assert asked.status_code == 200 and asked.json() == [], technician
            summary = (await tech.get("/returns/summary")).json()["items"]
            assert sum(s["expected"] for s in summary) == 1, technician
    async with service_client("parts", platform, role="technician", subject="tech-c") as tech:
        assert (await tech.get("/returns")).json() == []
