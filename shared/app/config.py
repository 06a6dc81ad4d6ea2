"""Configuration from environment variables.

No variable set gives the embedded default: SQLite files under ``TICKETLINE_DATA_DIR`` and
the ledger itself as the event log. ``DATABASE_URL`` and ``KAFKA_BOOTSTRAP_SERVERS`` switch
to the scaled mode. Every business figure from DOMAIN.md is a setting with its default here.
"""

from __future__ import annotations

import ipaddress
import re
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from typing import Annotated, Literal, Self

from pydantic import (
    AliasChoices,
    BaseModel,
    BeforeValidator,
    Field,
    PositiveInt,
    SecretStr,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from shared.app.key_files import (
    ed25519_private_key,
    json_web_key_set,
    pem_text_or_file,
    read_key_file,
    rs256_private_key,
    rs256_public_key,
)
from shared.eventstore.db import sqlite_path
from shared.kernel.calendar import iana_zone, unknown_zone
from shared.kernel.errors import InvalidCommand
from shared.kernel.events.sla import (
    DEFAULT_PAUSE_REASONS,
    MAX_TARGET_HOURS,
    EscalationLevel,
    LadderStep,
    PauseReason,
    TermsId,
)
from shared.kernel.sla import SlaPolicy, Step, check_terms


def _config(env_prefix: str) -> SettingsConfigDict:
    # NaN and infinity are refused with the rest at start (exit 2, naming the variable):
    # a NaN target hour let every urgent ticket fail at intake instead.
    return SettingsConfigDict(env_prefix=env_prefix, extra="ignore", allow_inf_nan=False)


Hours = Annotated[float, Field(gt=0, le=MAX_TARGET_HOURS)]
# Intervals, leases and caches: a week at most (a larger value is a typo: a lease that
# long keeps a crashed holder's job stopped for as long).
Seconds = Annotated[float, Field(gt=0, le=7 * 86400)]
# Periods of business rules (retention, windows, warranties): a century at most, the
# dates they give stay within the calendar.
Days = Annotated[int, Field(ge=1, le=36_500)]
Months = Annotated[int, Field(ge=0, le=1200)]
# Rows handled in one go (relay, projector, jobs).
BatchSize = Annotated[int, Field(ge=1, le=100_000)]
Coefficient = Annotated[float, Field(ge=0, le=100)]
# Scorecard points per item (deductions negative).
Points = Annotated[float, Field(ge=-1000, le=1000)]
Percent = Annotated[float, Field(ge=0, le=100)]
Score = Annotated[int, Field(ge=0, le=100)]
Rating = Annotated[int, Field(ge=0, le=10)]
Port = Annotated[int, Field(ge=1, le=65535)]


_DURATION = re.compile(r"^\s*(\d{1,12})\s*([smhd]?)\s*$")
# A token living longer than this is a key to be kept, not a token.
MAX_TOKEN_TTL_SECONDS = 366 * 86400


def token_lifetime(text: str) -> int:
    """``90`` / ``90s`` / ``15m`` / ``8h`` / ``7d`` → seconds, from 1 s to 366 days."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (e.g. 15m, 8h, 7d)")
    seconds = int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]
    if seconds <= 0:
        raise ValueError("a token that expires when issued is of no use (e.g. 15m)")
    if seconds > MAX_TOKEN_TTL_SECONDS:
        raise ValueError(f"{text!r} is longer than a token may live (at most 366d)")
    return seconds


class SlaSettings(BaseSettings):
    """Service-level targets (hours) and the SLA clock's terms (docs/sla.md)."""

    model_config = _config(env_prefix="TICKETLINE_SLA_")

    # The built-in policy's targets: wall-clock hours (24×7) from the receipt, used while
    # the policy named by ``policy_id`` has no version.
    response_hours_normal: Hours = 24.0
    response_hours_urgent: Hours = 2.0
    response_hours_critical: Hours = 0.5
    resolution_hours_simple: Hours = 4.0
    resolution_hours_general: Hours = 24.0
    resolution_hours_complex: Hours = 72.0
    # The policy new tickets start under (`PUT /sla-policies/{id}` defines its versions).
    policy_id: TermsId = "standard"
    # A deadline further than this after its clock could start is capped (and says so).
    horizon_days: int = Field(default=366, ge=1, le=3660)
    # The built-in policy's ladder (JSON), pause reasons and automatic pause for parts:
    # by default the breach escalates to the regional center, as always.
    ladder: list[LadderStep] = Field(
        default_factory=lambda: [LadderStep(percent=100, level=EscalationLevel.regional_center)]
    )
    pause_reasons: list[PauseReason] = Field(
        default_factory=lambda: list(DEFAULT_PAUSE_REASONS), min_length=1, max_length=20
    )
    pause_for_parts: bool = False
    # `POST /sla/what-if` recomputes each ticket of its period (about a millisecond each)
    # while the caller waits: a period with more is refused there (the CLI has no limit).
    what_if_max_tickets: int = Field(default=10_000, ge=1)

    @model_validator(mode="after")
    def _terms_as_the_api_checks_them(self) -> Self:
        try:
            check_terms([s.percent for s in self.ladder], self.pause_reasons, self.pause_for_parts)
        except InvalidCommand as exc:
            raise ValueError(
                f"{self.model_config['env_prefix']}{exc.field.upper()}: {exc.detail}"
            ) from None
        return self

    def response_hours(self, urgency: str) -> float:
        return float(getattr(self, f"response_hours_{urgency}"))

    def resolution_hours(self, complexity: str) -> float:
        return float(getattr(self, f"resolution_hours_{complexity}"))

    @property
    def horizon(self) -> timedelta:
        return timedelta(days=self.horizon_days)

    def builtin_policy(self) -> SlaPolicy:
        ladder = tuple((s.percent, s.level.value) for s in self.ladder)
        return _builtin_policy(ladder, tuple(self.pause_reasons), self.pause_for_parts)


@lru_cache(maxsize=32)
def _builtin_policy(
    ladder: tuple[tuple[float, str], ...], pause_reasons: tuple[str, ...], pause_for_parts: bool
) -> SlaPolicy:
    """One (frozen) policy per configuration: every intake, field-work decision and SLA
    read model asks for it."""
    return SlaPolicy(
        ladder=tuple(sorted((Step(p, level) for p, level in ladder), key=lambda s: s.percent)),
        pause_reasons=pause_reasons,
        pause_for_parts=pause_for_parts,
    )


class DispatchSettings(BaseSettings):
    """Service network, assignment, SLA clocks, repeat repairs (dispatch service)."""

    model_config = _config(env_prefix="TICKETLINE_DISPATCH_")

    # SLA clock (the hours themselves are the `sla` settings): how often it scans, how
    # long its lease lives (one scheduler at a time), how many tickets one pass handles.
    sla_poll_seconds: Seconds = 30.0
    sla_lease_seconds: Seconds = 120.0
    sla_batch_size: BatchSize = 200
    # A ticket for a serial repaired (fixed/replaced) this many days before is a repeat.
    repeat_repair_window_days: Annotated[int, Field(ge=0, le=36_500)] = 30
    # Suggested appointments: window length, and how far ahead to look for working hours.
    appointment_window_hours: Annotated[float, Field(gt=0, le=24)] = 2.0
    suggestion_horizon_days: Annotated[int, Field(ge=1, le=366)] = 7
    # Timezone of technicians registered without one.
    default_timezone: str = "UTC"

    @field_validator("default_timezone")
    @classmethod
    def _known_timezone(cls, name: str) -> str:
        if iana_zone(name) is None:  # the check a calendar's or a technician's gets
            raise ValueError(unknown_zone(name))
        return name


class PartsSettings(BaseSettings):
    """Spare parts: stock, requisitions, old-part returns, replenishment (parts service)."""

    model_config = _config(env_prefix="TICKETLINE_PARTS_")

    # Old parts replaced under warranty must be back within this many days of the repair.
    old_part_return_days: Annotated[float, Field(gt=0, le=36_500)] = 15.0
    # Replenishment: months_of_cover × average monthly usage × seasonal coefficient − stock.
    months_of_cover: Annotated[float, Field(ge=0, le=120)] = 3.0
    # Average over this many full calendar months before the current one.
    usage_months: Annotated[int, Field(ge=1, le=120)] = 3
    # Per calendar month (1-12), e.g. TICKETLINE_PARTS_SEASONAL_COEFFICIENTS='{"7": 1.4}';
    # a month not listed uses default_seasonal_coefficient.
    seasonal_coefficients: dict[Annotated[int, Field(ge=1, le=12)], Coefficient] = Field(
        default_factory=dict
    )
    default_seasonal_coefficient: Coefficient = 1.0
    # How often the overdue-return check runs, and its lease.
    overdue_check_seconds: Seconds = 60.0
    overdue_lease_seconds: Seconds = 120.0

    def seasonal_coefficient(self, month: int) -> float:
        return self.seasonal_coefficients.get(month, self.default_seasonal_coefficient)


class FeedbackSettings(BaseSettings):
    """Follow-ups, satisfaction, compliance, scorecards, quality alerts (feedback service)."""

    model_config = _config(env_prefix="TICKETLINE_FEEDBACK_")

    # Follow-up decision: a score below this (or an unsolved problem) reopens the ticket.
    dissatisfied_below: int = Field(default=60, ge=0, le=100)
    # Satisfaction bands (DOMAIN.md): >= very_satisfied_from, >= satisfied_from, >= neutral_from.
    band_very_satisfied_from: Score = 90
    band_satisfied_from: Score = 80
    band_neutral_from: Score = 60
    # NPS: would-recommend >= promoter_from is a promoter, <= detractor_up_to a detractor.
    nps_promoter_from: Rating = 9
    nps_detractor_up_to: Rating = 6

    @model_validator(mode="after")
    def _bands_in_order(self) -> Self:
        bands = (self.band_very_satisfied_from, self.band_satisfied_from, self.band_neutral_from)
        if not bands[0] > bands[1] > bands[2]:
            raise ValueError(
                "TICKETLINE_FEEDBACK_BAND_VERY_SATISFIED_FROM > _BAND_SATISFIED_FROM > "
                f"_BAND_NEUTRAL_FROM, not {bands}"
            )
        if self.nps_detractor_up_to >= self.nps_promoter_from:
            raise ValueError(
                "TICKETLINE_FEEDBACK_NPS_DETRACTOR_UP_TO must be below _NPS_PROMOTER_FROM"
            )
        return self

    # Service-level targets (DOMAIN.md), judged beside the rates by GET /compliance/summary:
    # at least these, except the complaint rate (under it). The resolution success rate is
    # the share of decided tickets resolved within their complexity's SLA.
    target_compliance_rate: Percent = 100.0
    target_resolution_sla_rate: Percent = 98.0
    target_satisfaction_average: Percent = 95.0
    target_nps: Annotated[float, Field(ge=-100, le=100)] = 60.0
    target_complaint_rate_below: Percent = 2.0
    # Scorecards: base score and points per item (deductions negative).
    scorecard_base: Annotated[float, Field(ge=0, le=1000)] = 100.0
    points_late_visit_dissatisfied: Points = -20.0
    points_repeat_repair: Points = -20.0
    points_poor_service: Points = -20.0
    points_public_complaint: Points = -10.0
    points_falsified_records: Points = -15.0
    points_late_parts_return: Points = -15.0
    points_positive_media: Points = 5.0
    # Staff KPI weights (percent; each set should sum to 100).
    technician_weight_first_time_fix: Percent = 40.0
    technician_weight_timeliness: Percent = 20.0
    technician_weight_parts_usage: Percent = 15.0
    technician_weight_customer_rating: Percent = 25.0
    agent_weight_response_time: Percent = 30.0
    agent_weight_record_accuracy: Percent = 20.0
    agent_weight_satisfaction: Percent = 50.0
    # Quality alerts: repairs per product model and fault category in one UTC day.
    quality_alert_threshold: int = Field(default=5, ge=1, le=1_000_000)
    quality_job_interval_seconds: Seconds = 60.0
    quality_job_lease_seconds: Seconds = 120.0


class PrivacySettings(BaseSettings):
    """Personal data: keys, erasure, retention, the read log (docs/personal-data.md)."""

    model_config = _config(env_prefix="TICKETLINE_PRIVACY_")

    # The master key (64 hex digits) wrapping the database's key-encryption key: a file
    # (a mounted secret), or the value itself; unset → generated once into the data dir.
    master_key_file: Path | None = None
    master_key: SecretStr | None = None
    # A KMS instead: "package.module:factory", called with the Settings, returning an
    # object with key_id, wrap(plaintext, context) and unwrap(wrapped, context).
    kms_factory: str | None = None
    # How long a process keeps a customer's data key in memory: an erasure made by another
    # process takes effect here within this time.
    key_cache_seconds: float = Field(default=60.0, ge=0, le=86400)
    # Retention: a customer whose tickets are all closed for this long (and who is not
    # under legal hold) is erased by the retention job. Default: 3 years.
    retention_days: Days = 1095
    retention_poll_seconds: Seconds = 3600.0
    retention_lease_seconds: Seconds = 600.0
    retention_batch_size: BatchSize = 100
    # The read log: written in batches off the request path.
    read_log_flush_seconds: Seconds = 1.0
    read_log_batch_size: BatchSize = 500


class ApiKeyEntry(BaseModel):
    """A machine API key (call-center software), stored by the SHA-256 of the key."""

    name: str
    role: str = "call_center_agent"
    region: str | None = None


class AuthSettings(BaseSettings):
    """Authentication and access control (docs/access-control.md)."""

    model_config = _config(env_prefix="TICKETLINE_AUTH_")

    # HS256 (embedded default): the shared secret; unset → generated into the data dir.
    jwt_secret: SecretStr | None = None
    # RS256 (scaled mode): any of these switches verification to RS256 only.
    public_key_file: Path | None = None
    jwks_file: Path | None = None
    jwks_url: str | None = None
    jwks_cache_seconds: Annotated[int, Field(ge=0, le=86400)] = 300
    # RS256: the private key `ticketline token` signs with (tokens usually come from an IdP).
    private_key_file: Path | None = None
    issuer: str = "ticketline"
    audience: str = "ticketline"
    leeway_seconds: Annotated[int, Field(ge=0, le=3600)] = 30
    token_ttl_default: str = "8h"
    # JSON: {"<sha256 hex of the key>": {"name": "acme-callcenter", "region": null}}.
    api_keys: dict[str, ApiKeyEntry] = Field(default_factory=dict)
    # Browser origins allowed to call the APIs; empty = CORS off.
    cors_allow_origins: list[str] = Field(default_factory=list)
    max_body_bytes: Annotated[int, Field(ge=1024, le=1024**3)] = 1_048_576
    # Import files uploaded to POST /imports/<kind> (streamed to disk, not held in memory).
    import_max_body_bytes: Annotated[int, Field(ge=1024, le=1024**4)] = 4 * 1024**3
    # Ticket intake per API key / subject: a token bucket (each replica limits on its own).
    intake_rate_per_minute: Annotated[float, Field(gt=0, le=1_000_000_000)] = 120.0
    intake_burst: Annotated[int, Field(ge=1, le=1_000_000_000)] = 60

    @field_validator("api_keys")
    @classmethod
    def _usable_api_keys(cls, keys: dict[str, ApiKeyEntry]) -> dict[str, ApiKeyEntry]:
        from shared.http.auth.tokens import check_api_key_entry  # where the claims schema is

        for digest, entry in keys.items():
            if not re.fullmatch(r"[0-9a-fA-F]{64}", digest):
                raise ValueError(
                    f"{digest[:70]!r} is not the SHA-256 of a key (64 hex digits): "
                    "`ticketline api-key` prints an entry"
                )
            try:
                check_api_key_entry(entry)
            except ValueError as exc:
                raise ValueError(f"the entry of {digest[:12]}…: {exc}") from None
        return keys

    @field_validator("public_key_file", "jwks_file", "private_key_file")
    @classmethod
    def _usable_key_file(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if path is not None:
            read = {
                "public_key_file": rs256_public_key,
                "private_key_file": rs256_private_key,
                "jwks_file": json_web_key_set,
            }[str(info.field_name)]
            read(read_key_file(path))
        return path

    @field_validator("jwks_url")
    @classmethod
    def _web_address(cls, url: str | None) -> str | None:
        if url is not None and not re.match(r"^https?://[^\s/]+", url):
            raise ValueError("an http(s):// address of the identity provider's JWKS")
        return url

    @field_validator("token_ttl_default")
    @classmethod
    def _token_lifetime(cls, text: str) -> str:
        token_lifetime(text)
        return text

    @property
    def uses_rs256(self) -> bool:
        return bool(self.public_key_file or self.jwks_file or self.jwks_url)


# The drivers the platform runs on (deploy/README.md).
DATABASE_DRIVERS = ("postgresql+asyncpg", "sqlite+aiosqlite")


class Settings(BaseSettings):
    model_config = _config(env_prefix="TICKETLINE_")

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

    @field_validator("data_dir")
    @classmethod
    def _a_directory(cls, path: Path) -> Path:
        """Made when missing; a file by that name is not one to make (`File exists`)."""
        if path.exists() and not path.is_dir():
            raise ValueError(f"{path} is a file, not a directory")
        return path

    @field_validator("database_url")
    @classmethod
    def _supported_database(cls, url: str | None) -> str | None:
        """Refused at start (exit 2), never a driver's traceback later."""
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        if not url:
            return url
        try:
            driver = make_url(url).drivername
        except ArgumentError:
            driver = None
        if driver not in DATABASE_DRIVERS:
            raise ValueError(
                "DATABASE_URL must be postgresql+asyncpg://user:password@host:port/database "
                "or sqlite+aiosqlite:///path/to/file.db"
            )
        return url

    # Apache Kafka supports the idempotent producer; the in-memory test broker does not.
    kafka_enable_idempotence: bool = True
    kafka_topic_prefix: str = "ticketline"
    kafka_consumer_group_prefix: str = "ticketline"
    # SQLite durability: NORMAL (the default) survives a crashed process but may lose the
    # last commits on power loss; FULL syncs every commit (group commit shares the cost).
    sqlite_synchronous: Literal["NORMAL", "FULL"] = "NORMAL"
    # Reader threads (each with its own connection) for SQLite reads.
    sqlite_read_threads: int = Field(default=4, ge=1, le=64)
    # How long a unit of work waits for the file's write lock another process holds
    # before it is 503 (Retry-After): a CLI import or replay on the same file.
    sqlite_busy_seconds: float = Field(default=30.0, gt=0, le=600)

    host: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)] = "127.0.0.1"
    # A request's head (request line and headers): above this, 431 and the connection
    # closed; not sent whole within the time, the connection closed (slow clients).
    http_max_header_bytes: int = Field(default=64 * 1024, ge=4096, le=16 * 1024 * 1024)
    http_header_timeout_seconds: float = Field(default=10.0, gt=0, le=600)
    # A body gets the header timeout, plus a second for each this many bytes: slower, the
    # connection is closed (a body trickled a byte a second held it forever).
    http_body_min_bytes_per_second: int = Field(default=500, ge=1, le=100 * 1024 * 1024)
    # Whose X-Forwarded-Proto/-For to trust (a TLS proxy's addresses, comma-separated, or
    # "*"): the console's cookie is Secure over HTTPS as that header says. Unset: 127.0.0.1.
    forwarded_allow_ips: str | None = Field(default=None, max_length=1000)

    @field_validator("forwarded_allow_ips")
    @classmethod
    def _addresses(cls, value: str | None) -> str | None:
        """Addresses or networks, comma-separated, or "*": a typo would trust nobody."""
        if value is None:
            return None
        for part in (p.strip() for p in value.split(",")):
            if part == "*":
                continue
            try:
                ipaddress.ip_network(part, strict=False)
            except ValueError:
                raise ValueError(f"{part!r} is no IP address or network (or *)") from None
        return value

    intake_port: Port = 8001
    dispatch_port: Port = 8002
    parts_port: Port = 8003
    feedback_port: Port = 8004
    # The operations console (services/console): its port and the language of its labels
    # until a user picks another with the switch on every page.
    console_port: Port = 8005
    console_locale: Literal["zh", "en"] = "zh"

    relay_batch_size: BatchSize = 500
    relay_poll_seconds: Seconds = 0.2
    relay_lease_seconds: Seconds = 10.0
    # How often the publishing relay compares the topics' end offsets with what it had
    # acknowledged (a broker that lost messages gets the history again).
    relay_topic_check_seconds: Seconds = 10.0
    projector_batch_size: BatchSize = 500
    projector_poll_seconds: Seconds = 0.2
    # Attempts of a failing batch, then of each of its events, before a projection or
    # reactor parks the event that keeps failing (`ticketline parked`).
    projector_retries: int = Field(default=5, ge=1, le=100)
    # Kafka source: how often a projector measures its projections against the ledger,
    # and how long an event may be in the ledger before the projector stops waiting for
    # the broker and applies it from the ledger itself.
    projector_ledger_check_seconds: Seconds = 1.0
    projector_ledger_grace_seconds: Annotated[float, Field(ge=0, le=7 * 86400)] = 10.0

    # Chain-head checkpoints (docs/checkpoints.md): how often one is appended (by the
    # `jobs` process holding the lease), and the Ed25519 private key signing them (PEM;
    # embedded default: generated into the data dir).
    checkpoint_interval_seconds: Seconds = 300.0
    checkpoint_lease_seconds: Seconds = 900.0
    checkpoint_signing_key: SecretStr | None = None

    # A command's answer is kept for its retries this long after it was made, then
    # forgotten by the `jobs` process (README: Idempotency-Key): a retry after that is a
    # new command.
    idempotency_keep_days: Days = 7
    idempotency_expiry_interval_seconds: Seconds = 3600.0
    idempotency_expiry_lease_seconds: Seconds = 600.0

    @field_validator("checkpoint_signing_key")
    @classmethod
    def _usable_signing_key(cls, key: SecretStr | None) -> SecretStr | None:
        if key is not None:
            ed25519_private_key(pem_text_or_file(key.get_secret_value()))
        return key

    # Operations: one JSON object per log line (``text`` for reading locally), and how
    # long /health/ready keeps a broker check (it must stay cheap under frequent probes).
    log_format: Literal["json", "text"] = "json"
    log_level: Annotated[
        Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"],
        BeforeValidator(lambda v: v.upper() if isinstance(v, str) else v),
    ] = "INFO"
    ready_broker_cache_seconds: Annotated[float, Field(ge=0, le=3600)] = 5.0
    # False keeps services in rotation while Kafka is down (writes buffer in the outbox).
    ready_requires_broker: bool = True
    ready_broker_timeout_seconds: Annotated[float, Field(gt=0, le=600)] = 2.0
    # Relay, projector and jobs processes have no API: with this set they serve their
    # own Prometheus metrics on it (services serve /metrics on their API port).
    metrics_port: Port | None = None
    # Topics the relay creates when missing (deploy/ creates them explicitly).
    kafka_topic_partitions: Annotated[int, Field(ge=1, le=10_000)] = 6
    kafka_topic_replication: Annotated[int, Field(ge=1, le=100)] = 1

    # HMAC key for audit export summaries; embedded default: generated into the data dir.
    audit_signing_key: SecretStr | None = None

    # Business figures (DOMAIN.md defaults).
    default_warranty_months: Months = 12
    # JSON object, e.g. TICKETLINE_WARRANTY_MONTHS_BY_MODEL='{"WM-700": 24}'.
    warranty_months_by_model: dict[str, Months] = Field(default_factory=dict)
    # Intake lists: default and largest page.
    page_size_default: PositiveInt = 50
    page_size_max: Annotated[int, Field(ge=1, le=10_000)] = 200
    # Numbers are PREFIX-YYYYMMDD-NNNNNN, at most 32 characters.
    ticket_number_prefix: Annotated[
        str, StringConstraints(pattern="^[A-Za-z0-9][A-Za-z0-9_.]{0,15}$")
    ] = "TL"

    @model_validator(mode="after")
    def _default_page_within_the_largest(self) -> Self:
        if self.page_size_default > self.page_size_max:
            raise ValueError(
                f"TICKETLINE_PAGE_SIZE_DEFAULT ({self.page_size_default}) above "
                f"TICKETLINE_PAGE_SIZE_MAX ({self.page_size_max})"
            )
        return self

    sla: SlaSettings = Field(default_factory=SlaSettings)

    dispatch: DispatchSettings = Field(default_factory=DispatchSettings)

    parts: PartsSettings = Field(default_factory=PartsSettings)

    feedback: FeedbackSettings = Field(default_factory=FeedbackSettings)

    auth: AuthSettings = Field(default_factory=AuthSettings)

    privacy: PrivacySettings = Field(default_factory=PrivacySettings)

    def warranty_months(self, model: str) -> int:
        return self.warranty_months_by_model.get(model, self.default_warranty_months)

    @property
    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'ticketline.db').as_posix()}"

    @property
    def database_url_for_display(self) -> str:
        """The database URL without its password (for logs and banners)."""
        from sqlalchemy.engine import make_url

        try:
            return make_url(self.resolved_database_url).render_as_string(hide_password=True)
        except Exception:  # not a URL SQLAlchemy reads: say nothing of it
            return "(the configured database)"

    @property
    def is_sqlite(self) -> bool:
        return self.resolved_database_url.startswith("sqlite")

    @property
    def uses_kafka(self) -> bool:
        return bool(self.kafka_bootstrap_servers)


@lru_cache
def get_settings() -> Settings:
    return Settings()


class CommandRefused(ValueError):
    """A command that would do harm, or cannot do what it was asked: the CLI prints the
    message and exits 2."""


def refuse_output_path(settings: Settings, path: Path, option: str) -> None:
    """Refuse to write ``path`` over the live database or another file of the data
    directory (keys, the database's WAL), or to a path that is no file (a directory, a
    device, a pipe: the summary is written beside the file, the file renamed into place):
    an output path given by mistake."""
    if path.is_symlink() or (path.exists() and not path.is_file()):
        raise CommandRefused(
            f"{option} {path}: not a file (a directory, device, pipe or link); give the "
            "path of a file"
        )
    target = path.resolve()
    own: list[Path] = []
    if settings.is_sqlite:
        database = Path(sqlite_path(settings.resolved_database_url)).resolve()
        own += [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    data_dir = Path(settings.data_dir).resolve()
    # The key files configured wherever they are (the master key kept apart, as advised).
    auth = settings.auth
    keys = [settings.privacy.master_key_file, auth.public_key_file, auth.jwks_file]
    keys += [auth.private_key_file]
    if settings.checkpoint_signing_key is not None:
        key = settings.checkpoint_signing_key.get_secret_value()
        keys.append(Path(key) if "-----BEGIN" not in key else None)
    own += [Path(k).resolve() for k in keys if k is not None]
    # The platform's own files there: the database (SQLite), its keys (.key, .pem).
    platform_file = target.parent == data_dir and (
        target.name.startswith("ticketline.db") or target.suffix in (".key", ".pem")
    )
    if target in own or platform_file:
        raise CommandRefused(
            f"{option} {path}: that is one of the platform's own files (the database, a key, "
            f"or a file of the data directory {data_dir}); give another path"
        )


class ConfigurationError(ValueError):
    """A setting that cannot be used (an unreadable key file, a factory that does not
    load): the process refuses to start with this message, naming the variable."""


_GROUPS: tuple[type[BaseSettings], ...] = (
    Settings,
    SlaSettings,
    DispatchSettings,
    PartsSettings,
    FeedbackSettings,
    PrivacySettings,
    AuthSettings,
)


def describe_invalid_settings(exc: ValidationError) -> list[str]:
    """One line per refused variable, by its environment name (values left out: one may
    be a secret)."""
    found = next((g for g in _GROUPS if g.__name__ == exc.title), None)
    prefix = str(found.model_config.get("env_prefix", "")) if found else ""
    lines = []
    for error in exc.errors():
        if not error["loc"]:  # a rule across variables: its message names them
            lines.append(str(error["msg"]).removeprefix("Value error, "))
            continue
        field = str(error["loc"][0])
        # A field read under aliases is named by the one it was read from (DATABASE_URL).
        aliased = field.isupper()
        # Within a JSON value, where: TICKETLINE_SLA_LADDER[0].level
        inner = "".join(
            f".{part}" if str(part).isidentifier() else f"[{part!r}]" for part in error["loc"][1:]
        ).replace("['[key]']", " (the key)")
        name = field if aliased else (prefix + field).upper()
        lines.append(f"{name}{inner}: {error['msg']}")
    return lines


def describe_unparsed_setting(exc: SettingsError) -> str:
    """The variable whose value pydantic-settings could not parse (JSON expected)."""
    found = re.search(r'field "([a-z_]+)"', str(exc))
    field = found.group(1) if found else ""
    names = [
        f"{g.model_config.get('env_prefix', '')}{field}".upper()
        for g in _GROUPS
        if field in g.model_fields
    ]
    return f"{' or '.join(names) or 'a variable'}: not valid JSON"
