"""The key hierarchy (docs/personal-data.md): master key sources, a wrong master key at
start, a corrupted data key, and sealing on every append path (imports included)."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import httpx
import pytest
from pydantic import SecretStr, ValidationError
from sqlalchemy import Connection, text

from shared.app.cli import main as cli_main
from shared.app.config import PrivacySettings, Settings
from shared.app.personal import MASTER_KEY_FILE, load_master_key
from shared.app.platform import Platform
from shared.eventstore.db import DatabaseUnavailable
from shared.eventstore.driver import Statement
from shared.eventstore.ledger import NEW_STREAM, EventStore, StreamAppend
from shared.eventstore.metrics import PERSONAL_DATA_UNREADABLE
from shared.eventstore.personal import MasterKeyMismatch, PersonalDataUnavailable, sealing
from shared.kernel.clock import ManualClock
from shared.kernel.events.tickets import (
    ContactDetailsCorrected,
    Customer,
    FollowUpRecorded,
    TicketReceived,
)
from shared.kernel.personal import (
    STORED,
    UNREADABLE,
    is_sealed,
    personal_fields,
    replace_paths,
)
from tests.support.auth import TEST_AUTH
from tests.support.clients import service_client
from tests.support.factories import context, received
from tests.support.privacy import Person

KEY_A = "11" * 32
KEY_B = "22" * 32


def settings_with(database_url: str, data_dir: Path, key: str | None = None) -> Settings:
    privacy = PrivacySettings(master_key=SecretStr(key) if key else None)
    return Settings(database_url=database_url, data_dir=data_dir, auth=TEST_AUTH, privacy=privacy)


# --- declarations (pure) --------------------------------------------------------------------


def test_personal_fields_are_declared_once_on_the_models() -> None:
    paths = {f.dotted: f.kind for f in personal_fields(TicketReceived)}
    assert paths == {
        "customer.name": "name",
        "customer.phone": "phone",
        "address.line": "hidden",
        "address.postcode": "hidden",
        "problem.symptom": "text",
        "problem.frequency": "text",
        "problem.environment": "text",
    }
    assert [f.dotted for f in personal_fields(ContactDetailsCorrected)] == [
        "customer.name",
        "customer.phone",
        "address.line",
        "address.postcode",
    ]


def test_the_sealed_form_passes_only_as_stored() -> None:
    token = "pd1.01a2178a-879a-7135-a780-186d2cf0f0fd." + "A" * 40
    assert is_sealed(token) and not is_sealed("pd1.not-a-token")
    with pytest.raises(ValidationError):  # a request body never carries it
        Customer.model_validate({"name": "Li", "phone": token})
    stored = Customer.model_validate({"name": "[erased]", "phone": token}, context=STORED)
    assert stored.phone == token
    body = {"customer": {"name": "a", "phone": "b"}, "x": 1}
    assert replace_paths(body, {("customer", "phone"): "c"}) == {
        "customer": {"name": "a", "phone": "c"},
        "x": 1,
    }
    assert body["customer"]["phone"] == "b"  # copied, not changed


# --- the master key ---------------------------------------------------------------------------


def test_master_key_sources(tmp_path: Path) -> None:
    generated = load_master_key(Settings(data_dir=tmp_path))
    path = tmp_path / MASTER_KEY_FILE
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert load_master_key(Settings(data_dir=tmp_path)).key_id == generated.key_id
    key_file = tmp_path / "secret.key"
    key_file.write_text(KEY_A + "\n")
    from_file = load_master_key(
        Settings(data_dir=tmp_path, privacy=PrivacySettings(master_key_file=key_file))
    )
    from_env = load_master_key(
        Settings(data_dir=tmp_path, privacy=PrivacySettings(master_key=SecretStr(KEY_A)))
    )
    assert from_file.key_id.split(":")[1] == from_env.key_id.split(":")[1]
    wrapped = from_file.wrap(b"x" * 32, b"ctx")
    assert from_env.unwrap(wrapped, b"ctx") == b"x" * 32
    with pytest.raises(ValueError, match="64 hex digits"):
        load_master_key(
            Settings(data_dir=tmp_path, privacy=PrivacySettings(master_key=SecretStr("abc")))
        )


async def test_a_wrong_master_key_refuses_to_start(database_url: str, tmp_path: Path) -> None:
    first = Platform.from_settings(settings_with(database_url, tmp_path / "a", KEY_A))
    try:
        await first.check_personal_data()
        async with service_client("intake", first) as intake:
            ticket = (await intake.post("/tickets", json=Person.make().body("SN-K"))).json()
    finally:
        await first.close()
    wrong = Platform.from_settings(settings_with(database_url, tmp_path / "b", KEY_B))
    try:
        with pytest.raises(MasterKeyMismatch, match="refusing to read or write personal data"):
            await wrong.check_personal_data()
        # Nothing is decrypted with the wrong key: a read that needs the keys fails.
        with pytest.raises(MasterKeyMismatch):
            await wrong.db.read(
                lambda c: wrong.store.open(c, wrong.store.read_stream(c, ticket["ticket_id"]))
            )
    finally:
        await wrong.close()


async def test_a_missing_key_file_is_said_and_never_generated_afresh(
    database_url: str, tmp_path: Path
) -> None:
    """The embedded default's key file not restored beside its database: the start is
    refused naming the file and the key the database needs — no new key is generated
    (one would sit where an operator looks for "the key", and unwrap nothing)."""
    data_dir = tmp_path / "data"
    first = Platform.from_settings(settings_with(database_url, data_dir))
    try:
        await first.check_personal_data()
        key_id = first.personal.ring.master.key_id
    finally:
        await first.close()
    (data_dir / MASTER_KEY_FILE).unlink()
    again = Platform.from_settings(settings_with(database_url, data_dir))
    try:
        with pytest.raises(MasterKeyMismatch) as refused:
            await again.check_personal_data()
    finally:
        await again.close()
    assert f"{MASTER_KEY_FILE} is missing" in str(refused.value)
    assert key_id in str(refused.value)
    assert not (data_dir / MASTER_KEY_FILE).exists()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_serve_refuses_to_start_with_a_clear_message(
    database_url: str, tmp_path: Path
) -> None:
    from shared.app.runtime import serve_one

    first = Platform.from_settings(settings_with(database_url, tmp_path / "a", KEY_A))
    await first.check_personal_data()
    await first.close()
    with pytest.raises(SystemExit, match="Refusing to start: the configured personal-data"):
        await serve_one(settings_with(database_url, tmp_path / "b", KEY_B), "intake", None)


async def test_rotating_the_master_key_keeps_every_value(
    database_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    person = Person.make()
    first = Platform.from_settings(settings_with(database_url, tmp_path / "a", KEY_A))
    try:
        await first.check_personal_data()
        async with service_client("intake", first) as intake:
            ticket = (await intake.post("/tickets", json=person.body("SN-R1"))).json()
    finally:
        await first.close()
    monkeypatch.setenv("TICKETLINE_DATABASE_URL", database_url)
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path / "cli"))
    monkeypatch.setenv("TICKETLINE_PRIVACY_MASTER_KEY", KEY_A)
    new_file = tmp_path / "new.key"

    async def rotate(*extra: str) -> tuple[int, str]:
        argv = ["rotate-master-key", "--new-key-file", str(new_file), *extra]
        code = await asyncio.to_thread(cli_main, argv)
        out = capsys.readouterr()
        return code, out.out or out.err

    code, out = await rotate("--generate")
    assert code == 0 and json.loads(out)["status"] == "rotated"
    assert stat.S_IMODE(new_file.stat().st_mode) == 0o600
    code, out = await rotate()
    assert code == 0 and json.loads(out)["status"] == "already"  # a rerun changes nothing
    code, out = await rotate("--generate")
    assert code == 2 and "exists" in out  # a key file is never overwritten
    missing = tmp_path / "no-such-folder" / "n.key"  # a typo: no folder made for it
    argv = ["rotate-master-key", "--new-key-file", str(missing), "--generate"]
    assert await asyncio.to_thread(cli_main, argv) == 2
    assert "no folder" in capsys.readouterr().err and not missing.parent.exists()
    monkeypatch.setenv("TICKETLINE_PRIVACY_MASTER_KEY", KEY_B)
    (tmp_path / "other.key").write_text("33" * 32)
    argv = ["rotate-master-key", "--new-key-file", str(tmp_path / "other.key")]
    assert await asyncio.to_thread(cli_main, argv) == 2
    assert "is not the one" in capsys.readouterr().err
    # An export refused for that reason leaves no file behind that looks like one.
    out = tmp_path / "tickets.csv"
    argv = ["export", "--kind", "tickets", "--out", str(out)]
    assert await asyncio.to_thread(cli_main, argv) == 2
    assert "is not the one" in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".tickets.csv.partial").exists()
    # A file that is no database: refused (2), left as it was, no key file made.
    monkeypatch.delenv("TICKETLINE_DATABASE_URL")
    (tmp_path / "cli").mkdir()
    (tmp_path / "cli" / "ticketline.db").write_bytes(b"\x13" * 4096)
    argv = ["rotate-master-key", "--new-key-file", str(tmp_path / "third.key"), "--generate"]
    assert await asyncio.to_thread(cli_main, argv) == 2
    assert "is not a SQLite database" in capsys.readouterr().err
    assert not (tmp_path / "third.key").exists()

    old = Platform.from_settings(settings_with(database_url, tmp_path / "b", KEY_A))
    try:
        with pytest.raises(MasterKeyMismatch):
            await old.check_personal_data()
    finally:
        await old.close()
    monkeypatch.delenv("TICKETLINE_PRIVACY_MASTER_KEY")
    privacy = PrivacySettings(master_key_file=new_file)
    rotated = Platform.from_settings(
        Settings(
            database_url=database_url, data_dir=tmp_path / "c", auth=TEST_AUTH, privacy=privacy
        )
    )
    try:
        await rotated.check_personal_data()
        (event,) = await rotated.db.read(
            lambda c: rotated.store.open(c, rotated.store.read_stream(c, ticket["ticket_id"]))
        )
        assert event.payload["customer"]["name"] == person.name
        async with service_client("intake", rotated) as intake:
            again = (await intake.post("/tickets", json=person.body("SN-R2"))).json()
        customers = await rotated.db.read(
            lambda c: {
                rotated.store.read_stream(c, t["ticket_id"])[0].payload["customer_id"]
                for t in (ticket, again)
            }
        )
        assert len(customers) == 1  # the same blind-index secret: the customer is recognised
    finally:
        await rotated.close()


# --- a corrupted data key -----------------------------------------------------------------------


async def test_a_corrupted_data_key_shows_unreadable_and_nothing_else_breaks(
    database_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    settings = settings_with(database_url, tmp_path, KEY_A)
    platform = Platform.from_settings(settings, clock=clock)
    broken, fine = Person.make(), Person.make()
    async with service_client("intake", platform) as intake:
        bad = (await intake.post("/tickets", json=broken.body("SN-1"))).json()["ticket_id"]
        good = (await intake.post("/tickets", json=fine.body("SN-2"))).json()["ticket_id"]
    corrupt = text(
        "UPDATE personal_data_keys SET wrapped_key = :junk WHERE customer_id = "
        "(SELECT customer_id FROM ticket_state WHERE ticket_id = :t)"
    )
    await platform.db.write(lambda c: c.execute(corrupt, {"junk": os.urandom(60), "t": bad}))
    await platform.close()
    before = PERSONAL_DATA_UNREADABLE.labels(what="key")._value.get()
    platform = Platform.from_settings(settings, clock=clock)  # a process without cached keys
    try:
        async with service_client("intake", platform, role="dispatcher") as disp:
            view = (await disp.get(f"/tickets/{bad}")).json()
            other = (await disp.get(f"/tickets/{good}")).json()
            listed = await disp.get("/tickets")
            diagnosis = {"category": "wear", "complexity": "simple", "resolution_path": "on_site"}
            assert (
                await disp.post(f"/tickets/{good}/diagnosis", json=diagnosis)
            ).status_code == 200
            assert (await disp.post(f"/tickets/{bad}/diagnosis", json=diagnosis)).status_code == 200
            fix = {"customer": {"name": "New Name", "phone": "13900001111"}, "reason": "typo"}
            refused = await disp.patch(f"/tickets/{bad}/contact", json=fix)
        # Work that records no personal data goes on (a follow-up without a comment);
        # a comment would be sealed by the unreadable key: refused.
        silent = FollowUpRecorded(
            satisfaction_score=90, would_recommend=9, problem_solved=True, channel="call"
        )

        def follow_up(payload: FollowUpRecorded) -> object:
            def work(c):  # type: ignore[no-untyped-def]
                head = platform.store.stream_head(c, bad)
                return platform.store.append(
                    c, [StreamAppend(bad, [payload], head, "east")], context()
                )

            return platform.db.write(work)

        await follow_up(silent)
        with pytest.raises(PersonalDataUnavailable):
            await follow_up(silent.model_copy(update={"comment": "thanks"}))
        assert (view["customer_name"], view["customer_phone"]) == (UNREADABLE, UNREADABLE)
        assert (other["customer_name"], other["address_line"]) == (fine.name, fine.line)
        assert listed.status_code == 200 and len(listed.json()["items"]) == 2
        assert refused.status_code == 503  # nothing new is recorded under an unreadable key
        assert refused.json()["type"].endswith("/service-unavailable")
        assert refused.json()["rule"] == "personal_data_key_unreadable"
        assert PERSONAL_DATA_UNREADABLE.labels(what="key")._value.get() > before
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=_intake_app(platform)), base_url="http://t"
        ) as anonymous:
            metrics = (await anonymous.get("/metrics")).text
        assert 'ticketline_personal_data_unreadable_total{what="key"}' in metrics
    finally:
        await platform.close()


def _intake_app(platform: Platform):  # type: ignore[no-untyped-def]
    from shared.app.registry import app_factory

    return app_factory("intake")(platform)


# --- every append path seals ----------------------------------------------------------------------


async def test_an_import_through_the_store_is_sealed_and_names_its_customer(
    platform: Platform, database_url: str, tmp_path: Path, clock: ManualClock
) -> None:
    """A go-live import appends historical tickets with the store, without an executor
    and without a customer id: the store seals and identifies all the same."""
    person = Person.make()
    historic = received(
        7, customer=Customer(name=person.name, phone=person.phone), customer_id=None
    )
    append = StreamAppend("t-import-1", [historic], NEW_STREAM, "east")
    (event,) = await platform.db.write(
        lambda c: platform.store.append(c, [append], context("import"))
    )
    assert event.payload["customer_id"] and is_sealed(event.payload["customer"]["name"])
    assert person.name not in str(event.payload) and event.computed_hash() == event.hash
    # Another process (no cache) appends a correction: sealed with the stream's customer.
    other = Platform.from_settings(platform.settings, clock=clock)
    try:
        fix = ContactDetailsCorrected(
            customer=Customer(name=person.name, phone=person.new_phone), reason="moved"
        )
        (corrected,) = await other.db.write(
            lambda c: other.store.append_to_stream(c, "t-import-1", 1, [fix], context())
        )
    finally:
        await other.close()
    token = corrected.payload["customer"]["phone"]
    assert token.startswith(f"pd1.{event.payload['customer_id']}.")
    opened = await platform.db.read(lambda c: platform.store.open(c, [event, corrected]))
    assert opened[0].payload["customer"]["name"] == person.name
    assert opened[1].payload["customer"]["phone"] == person.new_phone


class _ChangingLookup:
    """A customer's lookup row that another transaction inserts and erases again between
    each of this one's reads (read committed): the insert finds it, the look finds none."""

    def __init__(self, statement: Statement, changes: int) -> None:
        self.statement, self.changes = statement, changes

    def execute(self, conn: Connection, *args: Any) -> int:
        return 0 if self._changed() else self.statement.execute(conn, *args)

    def scalar(self, conn: Connection, *args: Any) -> Any:
        return None if self._changed() else self.statement.scalar(conn, *args)

    def _changed(self) -> bool:
        self.changes -= 1
        return self.changes >= 0


@pytest.mark.parametrize("backend", ["postgres"])
@pytest.mark.parametrize("changes", [6, 100])
async def test_a_new_customer_whose_lookup_kept_changing_runs_again_or_answers_busy(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, changes: int
) -> None:
    """Three tries within the transaction, then it runs again as a lost race does; a race
    that never ends is the busy database's 503, never a bare 500."""
    monkeypatch.setattr(sealing, "_NEW_CUSTOMER", _ChangingLookup(sealing._NEW_CUSTOMER, changes))
    monkeypatch.setattr(sealing, "_LOOKUP", _ChangingLookup(sealing._LOOKUP, changes))
    append = StreamAppend("t-race", [received(9)], NEW_STREAM, "east")

    async def receive() -> list[Any]:
        return await platform.db.write(lambda c: platform.store.append(c, [append], context()))

    if changes > 50:
        with pytest.raises(DatabaseUnavailable, match="busy"):
            await receive()
        return
    (event,) = await receive()
    assert event.payload["customer_id"] and is_sealed(event.payload["customer"]["name"])


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_bare_store_keeps_clear_values_that_open_as_they_are(
    platform: Platform, clock: ManualClock
) -> None:
    """Events written before sealing existed (a bare store: tests, old databases) read as
    they are; the next personal data on their stream is sealed for their customer."""
    bare = EventStore(clock=clock)
    append = StreamAppend("t-legacy", [received(8)], NEW_STREAM, "east")
    (legacy,) = await platform.db.write(lambda c: bare.append(c, [append], context()))
    assert legacy.payload["customer"]["name"] == "Li Wei"
    fix = ContactDetailsCorrected(customer=Customer(name="Li Wei", phone="13900002222"), reason="x")
    (sealed,) = await platform.db.write(
        lambda c: platform.store.append_to_stream(c, "t-legacy", 1, [fix], context())
    )
    assert is_sealed(sealed.payload["customer"]["phone"])
    opened = await platform.db.read(lambda c: platform.store.open(c, [legacy, sealed]))
    assert opened[0].payload["customer"]["name"] == "Li Wei"
    assert opened[1].payload["customer"]["phone"] == "13900002222"


def test_the_published_schemas_admit_the_sealed_form() -> None:
    """Kafka carries the stored form: the contract says which fields are sealed and how."""
    import re

    from shared.app.contract import SEALED_DEF, event_schemas

    schema = event_schemas()["TicketReceived.v2.schema.json"]
    assert schema["x-personal-fields"] == [f.dotted for f in personal_fields(TicketReceived)]
    phone = schema["$defs"]["Customer"]["properties"]["phone"]
    assert phone["x-personal"] == "phone"
    assert {"$ref": "#/$defs/SealedPersonalData"} in phone["anyOf"]
    token = "pd1.01a2178a-879a-7135-a780-186d2cf0f0fd." + "A" * 40
    assert re.fullmatch(SEALED_DEF["pattern"], token)
    assert re.fullmatch(SEALED_DEF["pattern"], "[erased]")
    assert not re.fullmatch(SEALED_DEF["pattern"], "13812345678")
