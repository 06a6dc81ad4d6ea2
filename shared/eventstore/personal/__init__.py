"""Personal data in the event store: sealed on append, opened on demand, erased by
destroying a key (docs/personal-data.md)."""

from shared.eventstore.personal.keys import (
    DataKey,
    KeyRing,
    LocalMasterKey,
    MasterKey,
    MasterKeyMismatch,
    PersonalDataUnavailable,
)
from shared.eventstore.personal.sealing import PersonalData

__all__ = [
    "DataKey",
    "KeyRing",
    "LocalMasterKey",
    "MasterKey",
    "MasterKeyMismatch",
    "PersonalData",
    "PersonalDataUnavailable",
]
