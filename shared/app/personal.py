"""The personal-data store of a platform: its master key from the configuration, and the
start-up check that the key is this database's (docs/personal-data.md)."""

from __future__ import annotations

import importlib
import logging
import secrets
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from shared.app.config import ConfigurationError
from shared.app.files import key_file
from shared.eventstore.personal import KeyRing, LocalMasterKey, MasterKey, PersonalData
from shared.eventstore.personal.keys import MasterKeyMissing, RotationResult
from shared.kernel.clock import Clock

if TYPE_CHECKING:
    from shared.app.config import Settings
    from shared.eventstore.db import Database

log = logging.getLogger(__name__)

MASTER_KEY_FILE = "personal-data-master.key"


def _from_hex(text: str, where: str) -> bytes:
    try:
        key = bytes.fromhex(text.strip())
    except ValueError:
        raise ConfigurationError(f"{where}: the master key is 64 hex digits") from None
    if len(key) != 32:
        raise ConfigurationError(f"{where}: the master key is 64 hex digits (256 bits)")
    return key


def load_master_key(settings: Settings) -> MasterKey:
    """The configured master key: a KMS factory, the key itself, a key file (a mounted
    secret) or — the embedded default — a key generated once into the data directory."""
    privacy = settings.privacy
    if privacy.kms_factory:
        module, _, name = privacy.kms_factory.partition(":")
        try:
            factory = getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError) as exc:
            raise ConfigurationError(
                f"TICKETLINE_PRIVACY_KMS_FACTORY: cannot load {privacy.kms_factory!r} "
                f"(module:function): {exc}"
            ) from None
        found: MasterKey = factory(settings)
        return found
    if privacy.master_key is not None:
        key = _from_hex(privacy.master_key.get_secret_value(), "TICKETLINE_PRIVACY_MASTER_KEY")
        return LocalMasterKey(key, "env")
    if privacy.master_key_file is not None:
        return read_key_file(privacy.master_key_file)
    path = Path(settings.data_dir) / MASTER_KEY_FILE
    text = key_file(path, _new_master_key).decode()
    return LocalMasterKey(_from_hex(text, str(path)), "data-dir")


def read_key_file(path: Path) -> LocalMasterKey:
    """A master key from a file of 64 hex digits (a mounted secret)."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"cannot read the master key file {path}: {exc}") from None
    return LocalMasterKey(_from_hex(text, str(path)), "file")


def generate_key_file(path: Path) -> None:
    """A new random master key in a new file (mode 0600); an existing file is refused,
    never overwritten (it may be the only copy of a key)."""
    if path.exists():
        raise FileExistsError(f"{path} exists: give a new path, or drop --generate to use it")
    if not path.parent.is_dir():  # a typo in the path, not a folder to create
        raise FileNotFoundError(f"no folder {path.parent} for the new key")
    key_file(path, _new_master_key)


def _new_master_key() -> bytes:
    return (secrets.token_hex(32) + "\n").encode()


class LazyMasterKey:
    """The configured master key, read when first needed (tools that never touch personal
    data — verify, export — need no key at all)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._key: MasterKey | None = None
        self._lock = threading.Lock()

    def _get(self) -> MasterKey:
        with self._lock:
            if self._key is None:
                self._key = load_master_key(self._settings)
            return self._key

    @property
    def key_id(self) -> str:
        return self._get().key_id

    def wrap(self, plaintext: bytes, context: bytes) -> bytes:
        return self._get().wrap(plaintext, context)

    def unwrap(self, wrapped: bytes, context: bytes) -> bytes:
        """Only what wrapped may unwrap: the embedded default's key file, gone, is not
        generated afresh for a database whose keys an earlier one wrapped."""
        if self._key is None and (missing := self._missing_key_file()) is not None:
            raise MasterKeyMissing(f"the personal-data master key file {missing} is missing")
        return self._get().unwrap(wrapped, context)

    def _missing_key_file(self) -> Path | None:
        privacy = self._settings.privacy
        if privacy.kms_factory or privacy.master_key is not None or privacy.master_key_file:
            return None
        path = Path(self._settings.data_dir) / MASTER_KEY_FILE
        return None if path.exists() else path


def personal_data(
    settings: Settings, clock: Clock, *, cached_customers: int | None = None
) -> PersonalData:
    """``cached_customers``: at most this many customers' data keys and memos (default:
    the key ring's and the store's own bounds)."""
    seconds = settings.privacy.key_cache_seconds
    if cached_customers is None:
        return PersonalData(KeyRing(LazyMasterKey(settings), cache_seconds=seconds), clock)
    ring = KeyRing(LazyMasterKey(settings), cache_seconds=seconds, cache_size=cached_customers)
    return PersonalData(ring, clock, memo_size=cached_customers)


async def check_master_key(db: Database, personal: PersonalData) -> None:
    """At start: unwrap this database's keys with the configured master key (creating them
    on a new database). Raises ``MasterKeyMismatch`` — the caller refuses to start."""
    await db.write(lambda c: personal.ring.ready(c, create=True))
    # The ledger's erasures stand: a restored backup from before one brought keys back.
    redone = await db.write(personal.redo_erasures)
    if redone:
        log.warning(
            "erased again %d customer(s) whose data keys a restored backup brought back: %s",
            len(redone),
            ", ".join(redone[:20]),
        )


async def rotate_master_key(settings: Settings, new: MasterKey) -> RotationResult:
    """Re-wrap this database's keys with ``new`` (``KeyRing.rotate_master``). Processes
    already running keep working (they unwrapped at start); each one started after this
    must be configured with the new key."""
    from shared.app.platform import Platform

    platform = Platform.from_settings(settings)
    try:
        return await platform.db.write(lambda c: platform.personal.ring.rotate_master(c, new))
    finally:
        await platform.close()
