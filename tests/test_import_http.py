"""``POST /imports/<kind>`` on the service that owns the kind: the upload streamed to disk,
then the same import as the CLI's; the answer is the summary and the error report."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import httpx
import pytest

from shared.app.platform import Platform
from shared.app.registry import app_factory
from tests.support.auth import headers_for
from tests.support.clients import service_client
from tests.support.history import write_history

pytestmark = pytest.mark.parametrize("backend", ["sqlite"])


async def test_admin_uploads_files_to_the_owning_service(
    platform: Platform, tmp_path: Path
) -> None:
    files = write_history(tmp_path, 5)
    async with service_client("dispatch", platform, role="admin") as dispatch:
        csv_ = {"content-type": "text/csv"}
        dry = await dispatch.post(
            "/imports/service-points",
            params={"dry_run": "true"},
            content=files["service_points"].read_bytes(),
            headers=csv_,
        )
        assert dry.status_code == 200, dry.text
        for spelling in ("yes", "1", "True"):  # JSON booleans only (README)
            refused = await dispatch.post(
                "/imports/service-points",
                params={"dry_run": spelling},
                content=files["service_points"].read_bytes(),
                headers=csv_,
            )
            assert refused.status_code == 422, refused.text
        assert dry.json()["summary"]["status"] == "valid"
        assert dry.json()["summary"]["ledger_position"] == {"before": 0, "after": 0}
        done = await dispatch.post(
            "/imports/service-points", content=files["service_points"].read_bytes(), headers=csv_
        )
        assert done.status_code == 200, done.text
        body = done.json()
        assert body["summary"]["status"] == "imported" and body["summary"]["imported"] == 9
        assert body["report"] == [] and body["report_total"] == 0
        again = await dispatch.post(
            "/imports/service-points", content=files["service_points"].read_bytes(), headers=csv_
        )
        assert again.json()["summary"]["already_present"] == 9
        # Tickets are intake's: not here.
        assert (
            await dispatch.post("/imports/tickets", content=b"x", headers=csv_)
        ).status_code == 404

    async with service_client("parts", platform, role="admin") as parts:
        lines = b'{"part_number": "motor-wm700", "name": "Motor", "unit_cost": 86.5}\n'
        answer = await parts.post(
            "/imports/parts", content=lines, headers={"content-type": "application/x-ndjson"}
        )
        assert answer.status_code == 200, answer.text
        assert answer.json()["summary"]["format"] == "jsonl"
        assert answer.json()["summary"]["imported"] == 1


async def test_a_refused_file_is_a_problem_with_the_report(platform: Platform) -> None:
    bad = b"id,name,level\nhq,HQ,headquarters\nrc,East,regional_center\nhq,Again,headquarters\n"
    async with service_client("dispatch", platform, role="admin") as dispatch:
        response = await dispatch.post(
            "/imports/service-points", content=bad, headers={"content-type": "text/csv"}
        )
        assert response.status_code == 422
        assert response.headers["content-type"].startswith("application/problem+json")
        problem = response.json()
        assert problem["summary"]["status"] == "refused"
        assert [(e["line"], e["field"]) for e in problem["report"]] == [(3, "region"), (4, "id")]
        unreadable = await dispatch.post(
            "/imports/service-points",
            content=b"colour\nred\n",
            headers={"content-type": "text/csv"},
        )
        assert unreadable.status_code == 422 and "unknown column" in unreadable.json()["detail"]
    async with service_client("dispatch", platform, role="dispatcher") as dispatcher:
        denied = await dispatcher.post(
            "/imports/service-points", content=bad, headers={"content-type": "text/csv"}
        )
        assert denied.status_code == 403
    # An import writes every region's history: not for a token confined to one.
    async with service_client("dispatch", platform, role="admin", region="east") as regional:
        denied = await regional.post(
            "/imports/service-points", content=bad, headers={"content-type": "text/csv"}
        )
        assert denied.status_code == 403 and denied.json()["errors"][0]["field"] == "region"


async def test_an_upload_of_a_file_being_imported_is_a_conflict(
    platform: Platform, tmp_path: Path
) -> None:
    """Another run holds the file's turn: 409 (send it again later), not a 422 that
    blames the file."""
    from shared.app.importing.catalog import find_kind
    from shared.app.importing.engine import IMPORT_LEASE_SECONDS
    from shared.app.importing.source import open_source
    from shared.eventstore.leases import Lease

    path = write_history(tmp_path, 0)["service_points"]
    source = open_source(path, find_kind("service_points").columns, name="x")
    name = f"import:service_points:{source.sha256[:40]}"
    other = Lease(platform.db, name, "elsewhere:1:x", IMPORT_LEASE_SECONDS, platform.clock)
    assert await other.acquire()
    async with service_client("dispatch", platform, role="admin") as dispatch:
        csv_ = {"content-type": "text/csv"}
        busy = await dispatch.post(
            "/imports/service-points", content=path.read_bytes(), headers=csv_
        )
        assert busy.status_code == 409, busy.text
        assert busy.json()["type"].endswith("import-busy")
        assert busy.json()["rule"] == "import_busy"  # as every 409 names its rule
        assert busy.json()["summary"]["status"] == "busy"
        await other.release()
        done = await dispatch.post(
            "/imports/service-points", content=path.read_bytes(), headers=csv_
        )
        assert done.status_code == 200 and done.json()["summary"]["status"] == "imported"


async def test_a_service_point_id_differing_only_in_case_is_refused_on_import(
    platform: Platform,
) -> None:
    """Network ids compare without case, in an import as in POST /service-points: a row
    whose id another one (registered, or earlier in the file) spells in another case is
    refused on its `id`."""
    csv_ = {"content-type": "text/csv"}
    async with service_client("dispatch", platform, role="admin") as dispatch:
        first = await dispatch.post(
            "/imports/service-points", content=b"id,name,level\nHQ,HQ,headquarters\n", headers=csv_
        )
        assert first.status_code == 200, first.text
        again = b"id,name,level\nhq,HQ,headquarters\nrc,East,regional_center\n"
        response = await dispatch.post("/imports/service-points", content=again, headers=csv_)
        assert response.status_code == 422, response.text
        assert (2, "id") in [(e["line"], e["field"]) for e in response.json()["report"]]
        within = (
            b"id,name,level,region\nrc-e,East,regional_center,east\nRC-E,E,regional_center,east\n"
        )
        response = await dispatch.post("/imports/service-points", content=within, headers=csv_)
        assert response.status_code == 422, response.text
        assert [(e["line"], e["field"]) for e in response.json()["report"]] == [(3, "id")]


async def test_a_technician_id_differing_only_in_case_is_refused_on_import(
    platform: Platform,
) -> None:
    """As POST /technicians: a row spelling another's id (registered, or earlier in the
    file) in another case is refused on its `id`."""
    csv_ = {"content-type": "text/csv"}
    points = (
        b"id,name,level,kind,parent_id,region\nhq,HQ,headquarters,,,\n"
        b"rc-east,East,regional_center,,hq,east\nsp-1,One,service_point,own_outlet,rc-east,east\n"
    )
    header = b"id,name,service_point_id,skills,working_hours,timezone\n"
    row = b",T,sp-1,dryers,mon-fri 08:00-17:00,Asia/Shanghai\n"
    async with service_client("dispatch", platform, role="admin") as dispatch:
        for path, body in (("service-points", points), ("technicians", header + b"t-1" + row)):
            done = await dispatch.post(f"/imports/{path}", content=body, headers=csv_)
            assert done.status_code == 200, done.text
        for body, line in ((b"T-1" + row, 2), (b"t-2" + row + b"T-2" + row, 3)):
            response = await dispatch.post(
                "/imports/technicians", content=header + body, headers=csv_
            )
            assert response.status_code == 422, response.text
            assert (line, "id") in [(e["line"], e["field"]) for e in response.json()["report"]]


async def test_uploads_above_the_limit_are_refused(platform: Platform) -> None:
    auth = replace(
        platform,
        settings=platform.settings.model_copy(
            update={
                "auth": platform.settings.auth.model_copy(update={"import_max_body_bytes": 100})
            }
        ),
    )
    app = app_factory("dispatch")(auth)
    body = b"id,name,level\n" + b"hq,Headquarters,headquarters\n" * 10

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 32):
            yield body[start : start + 32]

    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(
        transport=transport, base_url="http://t", headers=headers_for("admin")
    ) as client:
        declared = await client.post(
            "/imports/service-points", content=body, headers={"content-type": "text/csv"}
        )
        assert declared.status_code == 413
        streamed = await client.post(
            "/imports/service-points", content=chunks(), headers={"content-type": "text/csv"}
        )
        assert streamed.status_code == 413
        assert streamed.headers["content-type"].startswith("application/problem+json")


@pytest.mark.parametrize(
    ("service", "kind", "csv", "field"),
    [
        ("parts", "usage", "location_id,part_number,month,quantity\nsp-1,P-1,0000-01,5\n", "month"),
        (
            "parts",
            "locations",
            "location_id,name,level,parent_id,region,registered_at\n"
            "sp-y1,Y,service_point,rc-east,,0001-01-01T00:00:00+08:00\n",
            "registered_at",
        ),
    ],
)
async def test_a_date_out_of_the_calendar_is_a_row_problem_not_a_500(
    platform: Platform, service: str, kind: str, csv: str, field: str
) -> None:
    """Year 0 or 1 (a typo) overflowed the time arithmetic: 500, a dry run saying valid."""
    async with service_client(service, platform, role="admin") as admin:
        for dry_run, status in (("true", 200), ("false", 422)):
            response = await admin.post(
                f"/imports/{kind}",
                params={"dry_run": dry_run},
                content=csv.encode(),
                headers={"content-type": "text/csv"},
            )
            assert response.status_code == status, response.text
            assert [e["field"] for e in response.json()["report"]] == [field]


async def test_an_upload_of_no_known_type_is_read_by_its_first_byte(platform: Platform) -> None:
    """As the OpenAPI says: no `format`, a content type of neither format — the file's
    first byte decides (JSON Lines were read as CSV: 422 unknown column)."""
    line = b'{"id": "hq", "name": "HQ", "level": "headquarters"}\n'
    async with service_client("dispatch", platform, role="admin") as dispatch:
        for content_type in ("application/octet-stream", "application/json", "text/plain"):
            response = await dispatch.post(
                "/imports/service-points",
                params={"dry_run": "true"},
                content=line,
                headers={"content-type": content_type},
            )
            assert response.status_code == 200, response.text
            assert response.json()["summary"]["format"] == "jsonl"


async def test_an_uploads_charset_is_its_encoding_and_rows_of_empty_cells_are_blank(
    platform: Platform,
) -> None:
    """A Western-European file says so in its Content-Type (it would be read as GB18030:
    `Müller` as `M黮ler`); the rows a spreadsheet leaves of cleared cells are no rows."""
    body = "id,name,level\nhq,Zentrale Müller,headquarters\n,,\n,,,,\n".encode("cp1252")
    async with service_client("dispatch", platform, role="admin") as dispatch:
        response = await dispatch.post(
            "/imports/service-points",
            content=body,
            headers={"content-type": "text/csv; charset=windows-1252"},
        )
        assert response.status_code == 200, response.text
        summary = response.json()["summary"]
        assert (summary["encoding"], summary["rows"], summary["imported"]) == ("cp1252", 1, 1)
        hq = await dispatch.get("/service-points/hq")
        assert hq.json()["name"] == "Zentrale Müller"
        utf8 = {"content-type": "text/csv; charset=utf-8"}
        refused = await dispatch.post("/imports/service-points", content=body, headers=utf8)
        assert refused.status_code == 422 and "?encoding=" in refused.json()["detail"]
        assert "(the encoding is the Content-Type's charset)" in refused.json()["detail"]
        # Options no file could satisfy are the query's fields, named before any upload.
        for param, value, said in (
            ("timezone", "Mars/Olympus", "unknown time zone 'Mars/Olympus'"),
            ("encoding", "no-such-codec", "unknown encoding 'no-such-codec'"),
            ("encoding", "rot13", "'rot13' is not a text encoding"),
        ):
            refused = await dispatch.post(
                "/imports/service-points", params={param: value}, content=body, headers=utf8
            )
            assert refused.status_code == 422, refused.text
            assert refused.json()["errors"][0]["field"] == param
            assert said in refused.json()["errors"][0]["message"]
        both = await dispatch.post(
            "/imports/service-points",
            params={"timezone": "Nowhere/X", "encoding": "nope"},
            content=body,
            headers=utf8,
        )
        assert [e["field"] for e in both.json()["errors"]] == ["encoding", "timezone"]
        klingon = {"content-type": "text/csv; charset=klingon"}
        refused = await dispatch.post("/imports/service-points", content=body, headers=klingon)
        assert refused.status_code == 422 and refused.json()["errors"][0]["field"] == "Content-Type"


async def test_a_huge_csv_cell_is_its_rows_problem(platform: Platform) -> None:
    """With skip_invalid, a 2 MB cell (above the csv module's default limit) is reported
    for its row and the others import, as in JSON Lines (the whole file was refused)."""
    huge = "x" * 2_000_000
    csv = f"part_number,name,unit_cost\nP-1,Motor,10\nP-2,{huge},10\nP-3,Belt,2\n"
    async with service_client("parts", platform, role="admin") as parts:
        response = await parts.post(
            "/imports/parts",
            params={"dry_run": "true", "skip_invalid": "true"},
            content=csv.encode(),
            headers={"content-type": "text/csv"},
        )
    assert response.status_code == 200, response.text[:500]
    assert [(e["line"], e["field"]) for e in response.json()["report"]] == [(3, "name")]
