"""JSON lines stay one event per line for every line splitter: U+2028, U+2029 and U+0085
inside event text are escaped in ``ticketline subscribe`` output, in audit exports
(``format=jsonl``, whose signed summary still verifies) and in SSE ``data:`` lines."""

from __future__ import annotations

import asyncio
import json
import sys

import pytest

from services.intake.app import create_app
from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.audit import parse, signing_key, verify_export
from shared.app.platform import Platform
from shared.app.subscribe import json_line, subscribe_http
from shared.http.streams import format_sse
from tests.support.auth import headers_for, token_for
from tests.support.clients import service_client
from tests.support.servers import serve_app

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])

SEPARATORS = "\u2028\u2029\x85"
SYMPTOM = "drum\u2028does not\u2029spin\x85error E21"


async def open_tickets(platform: Platform, count: int = 2) -> list[str]:
    body = {**RECEIVE_EXAMPLE, "problem": {**RECEIVE_EXAMPLE["problem"], "symptom": SYMPTOM}}
    ids = []
    async with service_client("intake", platform) as agent:
        for n in range(count):
            body["product"] = {**RECEIVE_EXAMPLE["product"], "serial_number": f"SN-L{n}"}
            response = await agent.post("/tickets", json=body)
            assert response.status_code == 201, response.text
            ids.append(response.json()["ticket_id"])
    return ids


def no_raw_separator(text: str) -> bool:
    return not any(ch in text for ch in SEPARATORS)


async def test_audit_export_lines_are_events_and_the_summary_verifies(
    platform: Platform,
) -> None:
    await open_tickets(platform)
    async with service_client("intake", platform, role="auditor") as auditor:
        response = await auditor.get("/audit/export", params={"format": "jsonl"})
    assert response.status_code == 200, response.text
    text = response.content.decode()
    assert no_raw_separator(text)
    lines = text.splitlines()  # the Unicode way: splits on U+2028 too
    assert len(lines) == 2
    assert [json.loads(line)["payload"]["problem"]["symptom"] for line in lines] == [SYMPTOM] * 2
    summary = json.loads(response.headers["x-export-summary"])
    key = signing_key(platform.settings)
    check = await platform.db.read(
        lambda c: verify_export(response.content, summary, key, c, platform.store)
    )
    assert check.ok, check.problems
    assert [e.payload["problem"]["symptom"] for e in parse(response.content, "jsonl")] == [
        SYMPTOM
    ] * 2


async def test_sse_data_lines_and_the_subscriber_output_keep_one_event_per_line(
    platform: Platform,
) -> None:
    await open_tickets(platform)
    envelopes = await platform.db.read(lambda c: platform.store.read_all(c))
    for envelope in envelopes:
        message = format_sse(envelope)
        assert no_raw_separator(message)
        (data,) = [line for line in message.splitlines() if line.startswith("data: ")]
        assert json.loads(data[6:])["payload"] == envelope.payload
        line = json_line(envelope.to_json_dict())
        assert no_raw_separator(line) and json.loads(line) == json.loads(
            json.dumps(envelope.to_json_dict(), default=str)
        )

    seen: list[dict] = []
    async with serve_app(create_app(platform)) as url:
        await asyncio.wait_for(
            subscribe_http(
                url,
                region=None,
                types=[],
                from_beginning=True,
                position_file=None,
                emit=seen.append,
                max_events=2,
                headers=headers_for("dispatcher"),
            ),
            20,
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "shared.app.cli",
            "subscribe",
            "--url",
            url,
            "--from-beginning",
            "--max-events",
            "2",
            "--token",
            token_for("dispatcher"),
            stdout=asyncio.subprocess.PIPE,
        )
        out, _ = await asyncio.wait_for(process.communicate(), 60)
    assert [e["payload"]["problem"]["symptom"] for e in seen] == [SYMPTOM] * 2
    assert process.returncode == 0
    printed = out.decode()
    assert no_raw_separator(printed)
    lines = printed.splitlines()
    assert len(lines) == 2
    assert [json.loads(line)["payload"]["problem"]["symptom"] for line in lines] == [SYMPTOM] * 2
