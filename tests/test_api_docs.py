"""The API docs work without internet access, and every command shows an example.

``/docs`` (Swagger UI) and ``/redoc`` of every service reference only the service's own
URLs; their assets answer from the package. (tests/test_console_browser.py also opens
/docs in a real browser and checks that no request leaves 127.0.0.1.)
"""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.routing import APIRoute
from pydantic import BaseModel

from shared.app.registry import SERVICES, app_factory

COMMAND_METHODS = ("post", "put", "patch")
URL_IN_HTML = re.compile(r"""(?:src|href|url)\s*[=:]\s*['"]([^'"]+)['"]""")
ABSOLUTE_URL = re.compile(r"""(?:https?:)?//[\w.-]+""")


@pytest.fixture(params=SERVICES)
async def docs_client(request: pytest.FixtureRequest) -> Any:
    # Docs pages need neither credentials nor the database (no lifespan is run).
    app = app_factory(request.param)(None)
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://service.test") as client:
        yield client


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_reference_only_the_service(docs_client: httpx.AsyncClient, page: str):
    response = await docs_client.get(page)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    html = response.text
    # No absolute URL at all (a CDN, Google Fonts, the FastAPI favicon...).
    assert not ABSOLUTE_URL.search(html.replace("</", "<")), ABSOLUTE_URL.findall(html)
    referenced = URL_IN_HTML.findall(html)
    assert referenced, html
    for url in referenced:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, url
        assert url.startswith("/"), url
        answer = await docs_client.get(url)
        assert answer.status_code == 200, url


async def test_docs_assets_answer_from_the_package(docs_client: httpx.AsyncClient) -> None:
    for name, kind in (
        ("swagger-ui-bundle.js", "javascript"),
        ("swagger-ui.css", "text/css"),
        ("redoc.offline.js", "javascript"),
        ("favicon.png", "image/png"),
    ):
        response = await docs_client.get(f"/docs/assets/{name}")
        assert response.status_code == 200, name
        assert kind in response.headers["content-type"], (name, response.headers)
        assert len(response.content) > 1000, name
        # Static assets may be cached (the API's answers never are).
        assert response.headers.get("cache-control") != "no-store"
    assert (await docs_client.get("/docs/assets/nothing.js")).status_code == 404
    # No hard-coded CDN address left in what the pages load.
    redoc = (await docs_client.get("/docs/assets/redoc.offline.js")).text
    assert "cdn.redoc.ly" not in redoc
    assert (await docs_client.get("/docs/oauth2-redirect")).status_code == 200


def _resolve(document: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        schema = document["components"]["schemas"][name]
    return schema


def _examples(document: dict[str, Any], operation: dict[str, Any]) -> list[Any]:
    body = operation.get("requestBody")
    if body is None:
        return []
    found: list[Any] = []
    # JSON bodies, and files (an import's CSV): whatever the body's media type.
    for content in body["content"].values():
        if "example" in content:
            found.append(content["example"])
        found += [e.get("value") for e in content.get("examples", {}).values()]
        schema = _resolve(document, content.get("schema", {}))
        found += schema.get("examples", [])
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_every_command_has_a_request_example(service: str) -> None:
    app = app_factory(service)(None)
    document = app.openapi()
    missing = []
    operations = 0
    for path, items in document["paths"].items():
        for method, operation in items.items():
            if method not in COMMAND_METHODS:
                continue
            operations += 1
            if not _examples(document, operation):
                missing.append(f"{method.upper()} {path}")
    assert operations, service
    # An endpoint without a body documents that with an example too (an empty object or
    # openapi_extra), so that every command in /docs can be tried as shown.
    assert not missing, f"{service}: command operations without a request example: {missing}"


@pytest.mark.parametrize("service", SERVICES)
def test_request_examples_are_valid_bodies(service: str) -> None:
    app = app_factory(service)(None)
    checked = 0
    for route in _api_routes(app.routes):
        if not ({"POST", "PUT", "PATCH"} & route.methods) or route.body_field is None:
            continue
        model = route.body_field.field_info.annotation
        if not (isinstance(model, type) and issubclass(model, BaseModel)):
            continue
        extra = model.model_config.get("json_schema_extra") or {}
        if callable(extra):  # examples made when the document is (dated from today)
            made: dict[str, Any] = {}
            extra(made)  # type: ignore[call-arg]
            extra = made
        for example in extra.get("examples", []) if isinstance(extra, dict) else []:
            model.model_validate(example)  # raises on an example that is not a valid body
            checked += 1
    assert checked, service


def _api_routes(routes: list[Any]) -> list[APIRoute]:
    found: list[APIRoute] = []
    for route in routes:
        if isinstance(route, APIRoute):
            found.append(route)
        elif hasattr(route, "original_router"):
            found += _api_routes(route.original_router.routes)
    return found


def _schemas(node: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    pending = [node]
    while pending:
        item = pending.pop()
        if isinstance(item, dict):
            found.append(item)
            pending.extend(item.values())
        elif isinstance(item, list):
            pending.extend(item)
    return found


@pytest.mark.parametrize("service", SERVICES)
def test_documented_formats_are_the_ones_sent_and_accepted(service: str) -> None:
    """A local time of day is a pattern (JSON Schema's ``format: time`` needs an offset,
    which the services refuse); a CSV answer is listed beside the JSON one."""
    document = app_factory(service)(None).openapi()
    assert not [s for s in _schemas(document) if s.get("format") == "time"], service
    if service == "feedback":
        for path in ("/compliance/tickets", "/compliance/summary"):
            content = document["paths"][path]["get"]["responses"]["200"]["content"]
            assert {"application/json", "text/csv"} <= set(content), path


def test_the_answers_headers_are_documented() -> None:
    """What a client generated from the document needs: the ETag to send back in
    If-Match, where a created resource is, whether an answer is a replay, the correlation
    id; a reused Idempotency-Key is a 422 (the 409 is a rule or a version)."""
    document = app_factory("intake")(None).openapi()
    created = document["paths"]["/tickets"]["post"]["responses"]
    headers = created["201"]["headers"]
    assert {"ETag", "Location", "Idempotent-Replayed", "X-Correlation-ID"} <= set(headers)
    assert "idempotency-key-reused" not in created["409"]["description"]
    assert "idempotency-key-reused" in created["422"]["description"]
    view = document["paths"]["/tickets/{ticket_id}"]["get"]["responses"]["200"]["headers"]
    assert {"ETag", "X-Correlation-ID"} <= set(view)
    listed = document["paths"]["/tickets"]["get"]["responses"]["200"]["headers"]
    assert "ETag" not in listed and "X-Correlation-ID" in listed

    # Only what is sent: a Location where the created resource has a read, an ETag where
    # a command takes If-Match for what is read.
    parts = app_factory("parts")(None).openapi()["paths"]
    assert "Location" in parts["/locations/{location_id}"]["put"]["responses"]["201"]["headers"]
    assert "Location" not in parts["/stock/receipts"]["post"]["responses"]["201"]["headers"]
    feedback = app_factory("feedback")(None).openapi()["paths"]
    checklist = feedback["/compliance/tickets/{ticket_id}"]["get"]["responses"]["200"]
    assert "ETag" not in checklist["headers"]
