"""No input yields a 5xx: property-based fuzzing of every service's OpenAPI document, and a
hand-written table of hostile inputs against every route of every service.

Both run in-process against the real ASGI apps on SQLite, over a small world (network,
stock, tickets at several steps), so that generated requests reach past "not found".
Every answer must be below 500, every error a problem (``application/problem+json``), and
no app may raise — also not after a streaming answer started (tests/support/asgi.py).

The schemathesis stage is seeded and derandomized: the same cases every run. Its size is
bounded (``EXAMPLES`` per operation and generation mode) to keep this file well under
90 s on two cores; raise ``TICKETLINE_FUZZ_EXAMPLES`` locally for a deeper run.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from schemathesis.generation.modes import GenerationMode

from shared.app.platform import Platform
from shared.app.registry import SERVICES, app_factory
from tests.support import asgi
from tests.support.auth import headers_for
from tests.support.world import World, build_world
from tests.test_access_matrix import OPEN, POLICY, every_route

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

EXAMPLES = int(os.environ.get("TICKETLINE_FUZZ_EXAMPLES", "8"))
# Requests in flight at once: their database waits overlap.
CONCURRENCY = 8
# The callers the fuzzer acts as (tokens from tests/support/auth.py).
FUZZ_ROLES: dict[str, dict[str, str]] = {
    "admin": {},
    "auditor": {},
    "call_center_agent": {},
    "technician": {"subject": "t-world"},
    "regional_center": {"region": "east"},
    "dispatcher": {"region": "east"},
    "parts_clerk": {"location": "sp-east-1"},
    "customer_relations": {},
}
GENERATED_CREDENTIALS = {"authorization", "x-api-key"}


def check(answer: asgi.Answer, what: str) -> str | None:
    """Why this answer is a failure, or None."""
    if answer.error is not None:
        return f"{what}: the app raised {type(answer.error).__name__}: {answer.error}"
    if answer.timed_out or answer.status is None:
        return f"{what}: no answer"
    if answer.status >= 500:
        return f"{what}: {answer.status} {answer.body[:300]!r}"
    if answer.status >= 400 and not answer.content_type.startswith("application/problem+json"):
        return f"{what}: {answer.status} as {answer.content_type!r}, not a problem"
    return None


@dataclass(frozen=True)
class Planned:
    app: Any
    method: str
    url: str
    headers: dict[str, str]
    body: bytes
    what: str


async def run_all(planned: list[Planned], concurrency: int = CONCURRENCY) -> list[str]:
    """Send every planned request, ``concurrency`` at a time (the app's awaits on the
    database overlap); the failures found."""
    failures: list[str] = []
    queue = iter(planned)

    async def worker() -> None:
        for item in queue:
            answer = await asgi.call(
                item.app, item.method, item.url, headers=item.headers, body=item.body
            )
            problem = check(answer, item.what)
            if problem:
                failures.append(problem)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return failures


# --- schemathesis: property-based, from the OpenAPI documents ---------------------------


def generated_cases(app: Any, world: World) -> Iterator[tuple[str, dict[str, Any]]]:
    """(operation label, transport kwargs) for every operation: positive and negative cases
    with generated path values, and positive ones with ids that exist."""
    schema = schemathesis.openapi.from_dict(app.openapi())
    known = world.path_values()
    for result in schema.get_all_operations():
        operation = result.ok()
        names = {p.name for p in operation.path_parameters}
        fixed = {name: known[name] for name in names if name in known}
        variants = [(GenerationMode.POSITIVE, None), (GenerationMode.NEGATIVE, None)]
        if fixed:
            variants.append((GenerationMode.POSITIVE, fixed))
        for mode, path_parameters in variants:
            strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)
            for kwargs in draw(strategy):
                yield f"{operation.label} ({mode.value})", kwargs


def draw(strategy: Any) -> list[dict[str, Any]]:
    """``EXAMPLES`` cases of ``strategy`` (derandomized: the same ones every run), as
    transport kwargs."""
    cases: list[dict[str, Any]] = []

    @settings(
        max_examples=EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def collect(case: Any) -> None:
        cases.append(case.as_transport_kwargs(base_url="http://fuzz.test"))

    try:
        collect()
    except Exception as exc:  # e.g. nothing negative to generate for a bare GET
        if "Unsatisfiable" not in type(exc).__name__:
            raise
    return cases


def request_body(kwargs: dict[str, Any]) -> bytes:
    if "json" in kwargs:
        return json.dumps(kwargs["json"]).encode()
    data = kwargs.get("data")
    if data is None:
        return b""
    return data if isinstance(data, bytes) else str(data).encode("utf-8", "surrogatepass")


async def test_schemathesis_finds_no_server_error(platform: Platform) -> None:
    world = await build_world(platform)
    planned: list[Planned] = []
    started = time.monotonic()
    for service in SERVICES:
        app = app_factory(service)(platform)
        for n, (label, kwargs) in enumerate(generated_cases(app, world)):
            # The roles that may call the operation, in turn (403s are the matrix's job).
            allowed = POLICY[(kwargs["method"], label.split(" ")[1])]
            roles = sorted(FUZZ_ROLES if allowed == OPEN else set(allowed) & set(FUZZ_ROLES))
            role = roles[n % len(roles)]
            headers = {
                k: v for k, v in kwargs["headers"].items() if k.lower() not in GENERATED_CREDENTIALS
            }
            headers.update(headers_for(role, **FUZZ_ROLES[role]))
            url = kwargs["url"]
            if kwargs.get("params"):
                url = f"{url}?{urlencode(kwargs['params'], doseq=True)}"
            what = f"{service} {label} as {role}: {kwargs!r:.600}"
            planned.append(Planned(app, kwargs["method"], url, headers, request_body(kwargs), what))
    generated = time.monotonic() - started
    failures = await run_all(planned)
    elapsed = time.monotonic() - started
    print(
        f"schemathesis stage: {len(planned)} requests in {elapsed:.1f} s "
        f"({generated:.1f} s generating)"
    )
    assert len(planned) > 200
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:30])


# --- the hostile table: every route, every slot, every hostile value ---------------------

# Query, path and header values outside every type.
HOSTILE_TEXT: list[str] = [
    "",
    "٣",  # ARABIC-INDIC DIGIT THREE: str.isdigit() and int() accept it
    "１２",  # fullwidth digits
    "٢٠٢٦-W47",
    "9" * 5000,
    str(2**63),
    "-1",
    "1e400",
    "\x00",
    "a\u2028b\x85c",
    "x" * 20000,
    "9999-W52",
    "0000-W01",
    "0000-01",
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "2026-11-20T10:00:00",
    'W/"99999999999999999999"',
    "' OR '1'='1",
    "[]",
]
HEADER_TEXT = [v for v in HOSTILE_TEXT if len(v) < 6000]
CORRELATION_TEXT = ["\x00", "x" * 6000, "not-a-uuid"]
# An undeclared query parameter is ignored: a few values suffice.
UNDECLARED_TEXT = ["\x00", "x" * 20000, "٣"]


class Raw:
    """A JSON token json.dumps cannot write (Infinity, NaN, 1e999)."""

    def __init__(self, token: str) -> None:
        self.token = token


# JSON values of every wrong type, size and range.
HOSTILE_VALUES: list[Any] = [
    "",
    "\x00",
    "a\ud800b",  # a lone surrogate (json.dumps writes it as \ud800)
    "x" * 70000,
    "٣",
    2**63,
    -(2**63) - 1,
    -1,
    1.7976931348623157e308,
    True,
    None,
    [],
    {"unexpected": {"nested": [1, {"x": None}]}},
    "9999-12-31T23:59:59-23:59",
    "0001-01-01T00:00:00+23:59",
    "9999-12-31",
    "0001-01-01",
    Raw("Infinity"),
    Raw("NaN"),
]
NESTED_VALUES = ["", "\x00", "x" * 70000, 2**63, None, [], "9999-12-31", Raw("NaN")]


def dumps(value: Any) -> bytes:
    raws: dict[str, str] = {}

    def default(o: Any) -> Any:
        if isinstance(o, Raw):
            marker = f"__raw_{len(raws)}__"
            raws[marker] = o.token
            return marker
        raise TypeError(type(o).__name__)

    text = json.dumps(value, default=default)
    for marker, token in raws.items():
        text = text.replace(f'"{marker}"', token)
    return text.encode()


WHOLE_BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b'"text"',
    b"{",
    b"\xff\xfe\x00",
    b"[" * 100_000 + b"]" * 100_000,
    b'{"a":' * 50_000 + b"1" + b"}" * 50_000,
    b'{"x": "\\u0000"}',
    b"NaN",
    b"x" * (2 * 1024 * 1024),  # above the body limit
]


def role_for(method: str, path: str) -> str | None:
    allowed = POLICY[(method, path)]
    if allowed == OPEN:
        return None
    for role in ("admin", "call_center_agent", "customer_relations", "dispatcher"):
        if role in allowed:
            return role
    return sorted(allowed)[0]


def with_path(path: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        path = path.replace("{" + name + "}", quote(value, safe="", errors="surrogatepass"))
    return path


def base_body(operation: dict[str, Any], components: dict[str, Any]) -> Any:
    """A valid-looking body to put one hostile value into: the schema's example."""
    content = operation.get("requestBody", {}).get("content", {}).get("application/json", {})
    schema = content.get("schema", {})
    ref = schema.get("$ref")
    if ref:
        schema = components[ref.rsplit("/", 1)[1]]
    examples = schema.get("examples") or []
    example = next((e for e in examples if e), None)
    if example is not None:
        return example
    return {name: "x" for name in schema.get("required", [])}


def body_variants(body: Any) -> Iterator[tuple[str, Any]]:
    """``body`` with one field (top level, or one level down) replaced by each value."""
    if not isinstance(body, dict):
        return
    for key, current in body.items():
        for value in HOSTILE_VALUES:
            yield key, {**body, key: value}
        if isinstance(current, dict):
            for inner in current:
                for value in NESTED_VALUES:
                    yield f"{key}.{inner}", {**body, key: {**current, inner: value}}


async def test_hostile_inputs_on_every_route_never_give_a_server_error(
    platform: Platform,
) -> None:
    world = await build_world(platform)
    known = world.path_values()
    apps = {service: app_factory(service)(platform) for service in SERVICES}
    documents = {service: app.openapi() for service, app in apps.items()}
    planned: list[Planned] = []
    started = time.monotonic()

    for service, method, path in every_route():
        app = apps[service]
        document = documents[service]
        operation = document["paths"].get(path, {}).get(method.lower(), {})
        role = role_for(method, path)
        credentials = headers_for(role, **FUZZ_ROLES[role]) if role else {}
        names = [p.strip("{}") for p in path.split("/") if p.startswith("{")]
        good_path = with_path(path, {n: known.get(n, "x") for n in names})
        query_names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "query"]
        header_names = {
            p["name"].lower() for p in operation.get("parameters", []) if p["in"] == "header"
        }
        body = base_body(operation, document["components"]["schemas"])
        has_body = "requestBody" in operation
        good_body = dumps(body) if has_body else b""
        json_headers = {**credentials, "content-type": "application/json"}

        async def send(
            what: str,
            *,
            url: str = good_path,
            headers: dict[str, str] = json_headers,
            payload: bytes = good_body,
            raw_query: str | None = None,
            app: Any = app,
            method: str = method,
            label: str = f"{service} {method} {path}",
        ) -> None:
            if raw_query is not None:
                url = f"{url}?{raw_query}"
            planned.append(Planned(app, method, url, headers, payload, f"{label} [{what}]"))

        for name in names:
            for value in HOSTILE_TEXT:
                url = with_path(path, {**{n: known.get(n, "x") for n in names}, name: value})
                await send(f"path {name}={value[:20]!r}", url=url)
        for name in [*query_names, "unexpected"]:
            for value in HOSTILE_TEXT if name in query_names else UNDECLARED_TEXT:
                encoded = quote(value, safe="", errors="surrogatepass")
                await send(f"query {name}={value[:20]!r}", raw_query=f"{name}={encoded}")
            # The same parameter twice, and a lone surrogate's UTF-8 bytes.
            await send(f"query {name} twice", raw_query=f"{name}=a&{name}=b")
            await send(f"query {name} surrogate", raw_query=f"{name}=%ED%A0%80")
        for header in ("if-match", "idempotency-key", "last-event-id"):
            if header in header_names:
                for value in HEADER_TEXT:
                    await send(
                        f"header {header}={value[:20]!r}", headers={**json_headers, header: value}
                    )
        for value in CORRELATION_TEXT:
            await send(
                f"X-Correlation-ID={value[:20]!r}",
                headers={**json_headers, "x-correlation-id": value},
            )
        if has_body or method in {"POST", "PUT", "PATCH"}:
            for payload in WHOLE_BODIES:
                await send(f"body {payload[:20]!r}", payload=payload)
            for where, variant in body_variants(body):
                await send(f"body {where}", payload=dumps(variant))

    failures = await run_all(planned)
    elapsed = time.monotonic() - started
    print(f"hostile table: {len(planned)} requests in {elapsed:.1f} s")
    assert len(planned) > 1000
    assert not failures, f"{len(failures)} failures:\n" + "\n".join(failures[:40])
