"""The personal-data store's tables: the key hierarchy, who a customer is (blind indexes,
never clear values), and the log of reads that revealed personal data.

Created by the core migration 0006_personal_data_keys.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    false,
)

from shared.eventstore.db import UtcDateTime, metadata

BigId = BigInteger().with_variant(Integer(), "sqlite")

# One row: the key-encryption key and the blind-index secret, wrapped by the master key
# (a file, a secret or a KMS: docs/personal-data.md). Unwrapping it is the start-up check
# that the configured master key is this database's.
personal_data_master = Table(
    "personal_data_master",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("master_key_id", String(100), nullable=False),
    Column("wrapped", LargeBinary, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

# One row per customer (the data subject): the data key sealing their personal fields,
# wrapped by the key-encryption key. Erasure destroys ``wrapped_key`` and ``lookup``; the
# row stays (tickets still name the customer id, which then names nobody).
personal_data_keys = Table(
    "personal_data_keys",
    metadata,
    Column("customer_id", String(36), primary_key=True),
    # Keyed HMAC of the normalised name and phone: finds a returning customer.
    Column("lookup", String(64), nullable=True, unique=True),
    Column("wrapped_key", LargeBinary, nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("erased_at", UtcDateTime, nullable=True),
    Column("legal_hold", Boolean, nullable=False, server_default=false()),
)

# Blind index of every phone number recorded for a customer (at intake or corrected):
# phone search and duplicate detection without a clear number anywhere.
personal_data_phones = Table(
    "personal_data_phones",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("customer_id", String(36), primary_key=True),
    Index("ix_personal_data_phones_customer_id", "customer_id"),
)

# The lookup of contact details a correction gave a customer (one row per distinct name and
# phone, first customer wins): the customer is found by their current details as well.
personal_data_aliases = Table(
    "personal_data_aliases",
    metadata,
    Column("digest", String(64), primary_key=True),
    Column("customer_id", String(36), nullable=False),
    Index("ix_personal_data_aliases_customer_id", "customer_id"),
)

# Append-only: each response that showed a customer's personal data unmasked.
personal_data_reads = Table(
    "personal_data_reads",
    metadata,
    Column("id", BigId, primary_key=True, autoincrement=True),
    Column("read_at", UtcDateTime, nullable=False),
    Column("customer_id", String(36), nullable=False),
    Column("actor_subject", String(200), nullable=False),
    Column("actor_role", String(50), nullable=False),
    Column("service", String(50), nullable=False),
    # "GET /tickets/{ticket_id}": the route, not the URL (no query values).
    Column("endpoint", String(200), nullable=False),
    Column("ticket_id", String(64), nullable=True),
    Column("correlation_id", String(36), nullable=True),
    Index("ix_personal_data_reads_customer_id_read_at", "customer_id", "read_at"),
    Index("ix_personal_data_reads_read_at", "read_at"),
)
