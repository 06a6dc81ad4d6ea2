"""Configuration from environment variables.

No variable set gives the embedded default: SQLite files under ``TICKETLINE_DATA_DIR`` and
the ledger itself as the event log. ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` switch
to the scaled mode. Every business figure from DOMAIN.md is a setting with its default here.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

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

    # SLA clock (the hours themselves are the `sla` settings): how often it scans, how
    # long its lease lives (one scheduler at a time), how many tickets one pass handles.
    sla_poll_seconds: float = 30.0
    sla_lease_seconds: float = 120.0
    sla_batch_size: int = 200
    # A ticket for a serial repaired (fixed/replaced) this many days before is a repeat.
    repeat_repair_window_days: int = 30
    # Suggested appointments: window length, and how far ahead to look for working hours.
    appointment_window_hours: float = 2.0
    suggestion_horizon_days: int = 7
    # Timezone of technicians registered without one.
    default_timezone: str = "UTC"


class PartsSettings(BaseSettings):
    """Spare parts: stock, requisitions, old-part returns, replenishment (parts service)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_PARTS_", extra="ignore")

    # Old parts replaced under warranty must be back within this many days of the repair.
    old_part_return_days: float = 15.0
    # Replenishment: months_of_cover × average monthly usage × seasonal coefficient − stock.
    months_of_cover: float = 3.0
    # Average over this many full calendar months before the current one.
    usage_months: int = 3
    # Per calendar month (1-12), e.g. TICKETLINE_PARTS_SEASONAL_COEFFICIENTS='{"7": 1.4}';
    # a month not listed uses default_seasonal_coefficient.
    seasonal_coefficients: dict[int, float] = Field(default_factory=dict)
    default_seasonal_coefficient: float = 1.0
    # How often the overdue-return check runs, and its lease.
    overdue_check_seconds: float = 60.0
    overdue_lease_seconds: float = 120.0

    def seasonal_coefficient(self, month: int) -> float:
        return self.seasonal_coefficients.get(month, self.default_seasonal_coefficient)


class FeedbackSettings(BaseSettings):
    """Follow-ups, satisfaction, compliance, scorecards, quality alerts (feedback service)."""

    model_config = SettingsConfigDict(env_prefix="TICKETLINE_FEEDBACK_", extra="ignore")

    # Follow-up decision: a score below this (or an unsolved problem) reopens the ticket.
    dissatisfied_below: int = Field(default=60, ge=0, le=100)
    # Satisfaction bands (DOMAIN.md): >= very_satisfied_from, >= satisfied_from, >= neutral_from.
    band_very_satisfied_from: int = 90
    band_satisfied_from: int = 80
    band_neutral_from: int = 60
    # NPS: would-recommend >= promoter_from is a promoter, <= detractor_up_to a detractor.
    nps_promoter_from: int = 9
    nps_detractor_up_to: int = 6
    # Scorecards: base score and points per item (deductions negative).
    scorecard_base: float = 100.0
    points_late_visit_dissatisfied: float = -20.0
    points_repeat_repair: float = -20.0
    points_poor_service: float = -20.0
    points_public_complaint: float = -10.0
    points_falsified_records: float = -15.0
    points_late_parts_return: float = -15.0
    points_positive_media: float = 5.0
    # Staff KPI weights (percent; each set should sum to 100).
    technician_weight_first_time_fix: float = 40.0
    technician_weight_timeliness: float = 20.0
    technician_weight_parts_usage: float = 15.0
    technician_weight_customer_rating: float = 25.0
    agent_weight_response_time: float = 30.0
    agent_weight_record_accuracy: float = 20.0
    agent_weight_satisfaction: float = 50.0
    # Quality alerts: repairs per product model and fault category in one UTC day.
    quality_alert_threshold: int = Field(default=5, ge=1)
    quality_job_interval_seconds: float = 60.0
    quality_job_lease_seconds: float = 120.0


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
    # Import files uploaded to POST /imports/<kind> (streamed to disk, not held in memory).
    import_max_body_bytes: int = 4 * 1024**3
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
    # SQLite durability: NORMAL (the default) survives a crashed process but may lose the
    # last commits on power loss; FULL syncs every commit (group commit shares the cost).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Reader threads (each with its own connection) for SQLite reads.
    sqlite_read_threads: int = Field(default=4, ge=1, le=64)

    host: str = "127.0.0.1"
    intake_port: int = 8001
    dispatch_port: int = 8002
    parts_port: int = 8003
    feedback_port: int = 8004
    # The operations console (services/console): its port and the language of its labels
    # until a user picks another with the switch on every page.
    console_port: int = 8005
    console_locale: Literal["zh", "en"] = "zh"

    relay_batch_size: int = 500
    relay_poll_seconds: float = 0.2
    relay_lease_seconds: float = 10.0
    projector_batch_size: int = 500
    projector_poll_seconds: float = 0.2

    # Operations: one JSON object per log line (``text`` for reading locally), and how
    # long /health/ready keeps a broker check (it must stay cheap under frequent probes).
    log_format: Literal["json", "text"] = "json"
    log_level: str = "INFO"
    ready_broker_cache_seconds: float = 5.0
    # False keeps services in rotation while Kafka is down (writes buffer in the outbox).
    ready_requires_broker: bool = True
    ready_broker_timeout_seconds: float = 2.0
    # Relay, projector and jobs processes have no API: with this set they serve their
    # own Prometheus metrics on it (services serve /metrics on their API port).
    metrics_port: int | None = None
    # Topics the relay creates when missing (deploy/ creates them explicitly).
    kafka_topic_partitions: int = 6
    kafka_topic_replication: int = 1

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
