"""The published event contract stays in step with the models."""

from __future__ import annotations

import json

from shared.app.contract import CONTRACT_DIR, asyncapi, contract_problems, write_contract
from shared.kernel.events.registry import all_payload_classes


def test_committed_contract_matches_the_models() -> None:
    assert contract_problems() == []


def test_a_changed_model_without_a_version_bump_is_caught(tmp_path) -> None:
    write_contract(tmp_path)
    assert contract_problems(tmp_path) == []
    version = all_payload_classes()["TicketReceived"].schema_version
    path = tmp_path / "events" / f"TicketReceived.v{version}.schema.json"
    schema = json.loads(path.read_text())
    schema["properties"]["extra_field"] = {"type": "string"}  # what a silent change looks like
    path.write_text(json.dumps(schema))
    problems = contract_problems(tmp_path)
    assert any(f"TicketReceived.v{version}" in p and "bump" in p for p in problems)
    # Writing again does not "fix" it by overwriting a frozen version.
    write_contract(tmp_path)
    assert contract_problems(tmp_path)


def test_asyncapi_covers_every_event_type_and_topic() -> None:
    document = asyncapi()
    assert set(document["components"]["messages"]) == set(all_payload_classes())
    assert document["channels"]["tickets"]["address"] == "ticketline.tickets"
    committed = json.loads((CONTRACT_DIR / "asyncapi.json").read_text())
    assert committed == document
