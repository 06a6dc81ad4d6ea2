"""Configuration from environment variables.

No variable set gives the embedded default: SQLite files under ``TICKETLINE_DATA_DIR`` and
the ledger itself as the event log. ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` switch
to the scaled mode. Every business figure from DOMAIN.md is a setting with its default here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class SlaSettings(BaseSettings):
    """Service-level targets (hours)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_SLA_", extra="ignore")

    response_hours_normal: float = 24.0
    response_hours_urgent: float = 2.0
    response_hours_critical: float = 0.5
    resolution_hours_simple: float = 4.0
    resolution_hours_general: float = 24.0
    resolution_hours_complex: float = 72.0

    def response_hours(self, urgency: str) -> float:
        return float(getattr(self, f"response_hours_{urgency}"))

    def resolution_hours(self, complexity: str) -> float:
        return float(getattr(self, f"resolution_hours_{complexity}"))


class DispatchSettings(BaseSettings):
    """Service network, assignment, SLA clocks, repeat repairs (dispatch service)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_DISPATCH_", extra="ignore")


class PartsSettings(BaseSettings):
    """Spare parts: stock, requisitions, old-part returns, replenishment (parts service)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_PARTS_", extra="ignore")


class FeedbackSettings(BaseSettings):
    """Follow-ups, satisfaction, compliance, scorecards, quality alerts (feedback service)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_FEEDBACK_", extra="ignore")


class ApiKeyEntry(BaseModel):
    """A machine API key (call-center software), stored by the SHA-256 of the key."""

    name: str
    role: str = "call_center_agent"
    region: str | None = None


class AuthSettings(BaseSettings):
    """Authentication and access control (docs/access-control.md)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_AUTH_", extra="ignore")

    # HS256 (embedded default): the shared secret; unset → generated into the data dir.
    jwt_secret: SecretStr | None = None
    # RS256 (scaled mode): any of these switches verification to RS256 only.
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_cache_seconds: int = 300
    # RS256: the private key `ticketline token` signs with (tokens usually come from an IdP).
    private_key_file: Path | None = None
    issuer: str = "ticketline"
    audience: str = "ticketline"
    leeway_seconds: int = 30
    token_ttl_default: str = "8h"
    # JSON: {"<sha256 hex of the key>": {"name": "acme-callcenter", "region": null}}.
    api_keys: dict[str, ApiKeyEntry] = Field(default_factory=dict)
    # Browser origins allowed to call the APIs; empty = CORS off.
    cors_allow_origins: list[str] = Field(default_factory=list)
    max_body_bytes: int = 1_048_576
    # Ticket intake per API key / subject: a token bucket (each replica limits on its own).
    intake_rate_per_minute: float = 120.0
    intake_burst: int = 60

    @property
    def uses_rs256(self) -> bool:
        return bool(self.public_key_file or self.jwks_file or self.jwks_url)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TICKETLINE_", extra="ignore")

    data_dir: Path = Path("data")
    database_url: str | None = Field(
        default=None, validation_alias=AliasChoices("DATABASE_URL", "TICKETLINE_DATABASE_URL")
    )
    kafka_bootstrap_servers: str | None = Field(
        default=None,
        validation_alias=AliasChoices(
            "KAFKA_BOOTSTRAP_SERVERS", "TICKETLINE_KAFKA_BOOTSTRAP_SERVERS"
        ),
    )
    # Apache Kafka supports the idempotent producer; the in-memory test broker does not.
    kafka_enable_idempotence: bool = True
    kafka_topic_prefix: str = "ticketline"
    kafka_consumer_group_prefix: str = "ticketline"

    host: str = "127.0.0.1"
    intake_port: int = 8001
    dispatch_port: int = 8002
    parts_port: int = 8003
    feedback_port: int = 8004

    relay_batch_size: int = 500
    relay_poll_seconds: float = 0.2
    relay_lease_seconds: float = 10.0
    projector_batch_size: int = 500
    projector_poll_seconds: float = 0.2

    # HMAC key for audit export summaries; embedded default: generated into the data dir.
    audit_signing_key: SecretStr | None = None

    # Business figures (DOMAIN.md defaults).
    default_warranty_months: int = 12
    # JSON object, e.g. TICKETLINE_WARRANTY_MONTHS_BY_MODEL='{"WM-700": 24}'.
    warranty_months_by_model: dict[str, int] = Field(default_factory=dict)
    # Intake lists: default and largest page.
    page_size_default: int = 50
    page_size_max: int = 200
    ticket_number_prefix: str = "TL"

    sla: SlaSettings = Field(default_factory=SlaSettings)

    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    parts: PartsSettings = Field(default_factory=PartsSettings)

    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    auth: AuthSettings = Field(default_factory=AuthSettings)

    def warranty_months(self, model: str) -> int:
        return self.warranty_months_by_model.get(model, self.default_warranty_months)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ticketline.db').as_posix()}"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap_servers)


@lru_cache
def get_settings() -> Settings:
    return Settings()
