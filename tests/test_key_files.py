"""Keys generated into the data directory (embedded default): processes starting together
on one directory — `make run`, `ticketline token`, a CLI job — end with one key each."""

from __future__ import annotations

import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from shared.app.audit import signing_key as audit_key
from shared.app.checkpoints import public_pem
from shared.app.checkpoints import signing_key as checkpoint_key
from shared.app.config import Settings
from shared.app.personal import load_master_key
from shared.http.auth.tokens import hs256_secret


def _checkpoint_public(settings: Settings) -> str:
    return public_pem(checkpoint_key(settings).public_key())


@pytest.mark.parametrize(
    ("read", "name"),
    [
        (hs256_secret, "auth-jwt.key"),
        (audit_key, "audit-signing.key"),
        (_checkpoint_public, "checkpoint-signing.pem"),
        (lambda s: load_master_key(s).key_id, "personal-data-master.key"),
    ],
)
def test_callers_racing_on_a_new_data_directory_share_one_key(
    read, name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # type: ignore[no-untyped-def]
    for configured in (
        "TICKETLINE_AUTH_JWT_SECRET",
        "TICKETLINE_AUDIT_SIGNING_KEY",
        "TICKETLINE_CHECKPOINT_SIGNING_KEY",
        "TICKETLINE_PRIVACY_MASTER_KEY",
        "TICKETLINE_PRIVACY_MASTER_KEY_FILE",
    ):
        monkeypatch.delenv(configured, raising=False)
    settings = Settings(data_dir=tmp_path / "data")
    with ThreadPoolExecutor(8) as pool:
        keys = set(pool.map(lambda _: read(settings), range(32)))
    assert len(keys) == 1
    path = tmp_path / "data" / name
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in path.parent.iterdir()] == [name]  # no draft left beside it
