"""Configuration: every environment variable is read and checked at start; a value that
cannot be used refuses the start (exit 2), naming the variable, never a traceback later."""

from __future__ import annotations

from pathlib import Path

import pytest

from shared.app.cli import main as cli_main
from shared.app.platform import Platform
from tests.support.ports import free_ports_env


def test_pause_for_parts_without_its_reason_refuses_to_start(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The built-in policy's terms are checked as PUT /sla-policies checks a version's."""
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("TICKETLINE_SLA_PAUSE_FOR_PARTS", "true")
    monkeypatch.setenv("TICKETLINE_SLA_PAUSE_REASONS", '["customer_unavailable"]')
    assert cli_main(["token", "--role", "admin", "--subject", "x"]) == 2
    err = capsys.readouterr().err
    assert "TICKETLINE_SLA_PAUSE_REASONS: pause_for_parts needs the reason" in err


@pytest.mark.parametrize(
    ("variable", "value", "said"),
    [
        ("TICKETLINE_PRIVACY_MASTER_KEY_FILE", "{tmp}/missing.key", "cannot read the master key"),
        ("TICKETLINE_PRIVACY_MASTER_KEY", "abcd", "TICKETLINE_PRIVACY_MASTER_KEY: the master"),
        ("TICKETLINE_PRIVACY_KMS_FACTORY", "nope.module:factory", "KMS_FACTORY: cannot load"),
        ("TICKETLINE_PRIVACY_RETENTION_DAYS", "abc", "TICKETLINE_PRIVACY_RETENTION_DAYS: "),
        # A database URL no driver of the platform reads: named, not a driver's traceback.
        ("DATABASE_URL", "garbage", "DATABASE_URL: Value error, DATABASE_URL must be"),
        ("DATABASE_URL", "postgresql://u:p@127.0.0.1:1/db", "DATABASE_URL: Value error"),
        ("DATABASE_URL", "mysql://u@127.0.0.1/db", "DATABASE_URL: Value error"),
        # Business figures: a value no rule can use, refused at start (a NaN target hour
        # failed every urgent ticket's intake; a JSON typo was a traceback, exit 70).
        ("TICKETLINE_SLA_RESPONSE_HOURS_URGENT", "nan", "URGENT: Input should be a finite"),
        ("TICKETLINE_SLA_RESPONSE_HOURS_CRITICAL", "inf", "CRITICAL: Input should be a finite"),
        ("TICKETLINE_SLA_RESPONSE_HOURS_NORMAL", "0", "NORMAL: Input should be greater than 0"),
        ("TICKETLINE_SLA_LADDER", "notjson", "TICKETLINE_SLA_LADDER: not valid JSON"),
        (
            "TICKETLINE_SLA_LADDER",
            '[{"percent": 100, "level": "headquarters"}, '
            '{"percent": 100, "level": "regional_center"}]',
            "TICKETLINE_SLA_LADDER: two steps of the ladder at the same percentage",
        ),
        ("TICKETLINE_SLA_PAUSE_REASONS", "[]", "TICKETLINE_SLA_PAUSE_REASONS: List should"),
        ("TICKETLINE_SLA_PAUSE_REASONS", '["Bogus!"]', "PAUSE_REASONS[0]: String should"),
        ("TICKETLINE_SLA_POLICY_ID", "a b/c", "TICKETLINE_SLA_POLICY_ID: String should match"),
        ("TICKETLINE_DISPATCH_SLA_POLL_SECONDS", "-1", "SLA_POLL_SECONDS: Input should be"),
        ("TICKETLINE_PARTS_SEASONAL_COEFFICIENTS", '{"13": 1.2}', "COEFFICIENTS['13'] (the key)"),
        ("TICKETLINE_FEEDBACK_BAND_SATISFIED_FROM", "95", "_BAND_SATISFIED_FROM > _BAND_NEUTRAL"),
        ("TICKETLINE_FEEDBACK_TARGET_NPS", "101", "TICKETLINE_FEEDBACK_TARGET_NPS: Input should"),
        ("TICKETLINE_INTAKE_PORT", "70000", "TICKETLINE_INTAKE_PORT: Input should be"),
        ("TICKETLINE_PAGE_SIZE_DEFAULT", "500", "TICKETLINE_PAGE_SIZE_DEFAULT (500) above"),
        ("TICKETLINE_WARRANTY_MONTHS_BY_MODEL", "[1", "WARRANTY_MONTHS_BY_MODEL: not valid JSON"),
        ("TICKETLINE_DISPATCH_DEFAULT_TIMEZONE", "Mars/Olympus", "unknown time zone 'Mars/"),
        ("TICKETLINE_LOG_LEVEL", "LOUD", "TICKETLINE_LOG_LEVEL: Input should be 'DEBUG'"),
        ("TICKETLINE_TICKET_NUMBER_PREFIX", "a b/c", "TICKETLINE_TICKET_NUMBER_PREFIX: String"),
        ("TICKETLINE_SLA_LADDER", '[{"percent": 50}]', "TICKETLINE_SLA_LADDER[0].level: Field"),
        # Keys: one that does not load refused the start, not every authenticated call
        # (500) or every checkpoint (silently never signed).
        ("TICKETLINE_AUTH_PUBLIC_KEY_FILE", "{tmp}/none.pem", "PUBLIC_KEY_FILE: Value error, can"),
        ("TICKETLINE_AUTH_PUBLIC_KEY_FILE", "{tmp}/text.pem", "not an RSA public key"),
        ("TICKETLINE_AUTH_PRIVATE_KEY_FILE", "{tmp}/text.pem", "not an RSA private key"),
        ("TICKETLINE_AUTH_JWKS_FILE", "{tmp}/text.pem", "JWKS_FILE: Value error, not a usable"),
        ("TICKETLINE_AUTH_JWKS_FILE", "{tmp}/oct.json", "(it holds no RSA key)"),
        ("TICKETLINE_AUTH_JWKS_URL", "idp.example.com/jwks", "JWKS_URL: Value error, an http"),
        ("TICKETLINE_CHECKPOINT_SIGNING_KEY", "garbage", "SIGNING_KEY: Value error, cannot read"),
        (
            "TICKETLINE_CHECKPOINT_SIGNING_KEY",
            "-----BEGIN PRIVATE KEY-----\nCHANGE-ME\n-----END PRIVATE KEY-----",
            "TICKETLINE_CHECKPOINT_SIGNING_KEY: Value error, not an Ed25519 private key",
        ),
        ("TICKETLINE_AUTH_TOKEN_TTL_DEFAULT", "forever", "TTL_DEFAULT: Value error, not a dur"),
        # An API key entry the claims schema refuses: refused at start, not a 401 on every
        # request made with the key.
        (
            "TICKETLINE_AUTH_API_KEYS",
            '{"' + "a" * 64 + '": {"name": "x", "role": "regional_center"}}',
            "needs a region",
        ),
        (
            "TICKETLINE_AUTH_API_KEYS",
            '{"' + "a" * 64 + '": {"name": "x", "role": "superuser"}}',
            "unknown role 'superuser'",
        ),
        ("TICKETLINE_AUTH_API_KEYS", '{"aa": {"name": "x"}}', "'aa' is not the SHA-256 of a key"),
        ("TICKETLINE_AUTH_TOKEN_TTL_DEFAULT", "99999999d", "longer than a token may live"),
        ("TICKETLINE_AUTH_TOKEN_TTL_DEFAULT", "0s", "expires when issued"),
        # Figures beyond any use: a warranty or retention past the calendar failed intake
        # (500) or the retention job; an interval past the event loop's timers, its job.
        ("TICKETLINE_DEFAULT_WARRANTY_MONTHS", "99999999999", "WARRANTY_MONTHS: Input should"),
        ("TICKETLINE_WARRANTY_MONTHS_BY_MODEL", '{"WM-1": 1e6}', "MODEL['WM-1']: Input"),
        ("TICKETLINE_PRIVACY_RETENTION_DAYS", "999999999", "RETENTION_DAYS: Input should be"),
        ("TICKETLINE_PARTS_OLD_PART_RETURN_DAYS", "1e300", "RETURN_DAYS: Input should be"),
        ("TICKETLINE_DISPATCH_REPEAT_REPAIR_WINDOW_DAYS", "9e9", "WINDOW_DAYS: Input should"),
        ("TICKETLINE_DISPATCH_SUGGESTION_HORIZON_DAYS", "100000", "HORIZON_DAYS: Input should"),
        ("TICKETLINE_FEEDBACK_QUALITY_ALERT_THRESHOLD", "1e12", "ALERT_THRESHOLD: Input"),
        ("TICKETLINE_CHECKPOINT_INTERVAL_SECONDS", "1e12", "INTERVAL_SECONDS: Input should be"),
        ("TICKETLINE_PAGE_SIZE_MAX", "99999999", "TICKETLINE_PAGE_SIZE_MAX: Input should be"),
        ("TICKETLINE_FEEDBACK_POINTS_REPEAT_REPAIR", "-1e300", "REPEAT_REPAIR: Input should"),
        ("TICKETLINE_HOST", " ", "TICKETLINE_HOST: String should have at least 1"),
        ("TICKETLINE_FORWARDED_ALLOW_IPS", "not an ip, ::zz", "'not an ip' is no IP address"),
        ("TICKETLINE_FORWARDED_ALLOW_IPS", "", "'' is no IP address or network"),
        ("TICKETLINE_DATA_DIR", "{tmp}/text.pem", "DATA_DIR: Value error, /"),
    ],
)
def test_an_unusable_setting_refuses_to_start_naming_it(
    variable: str,
    value: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path / "data"))
    for port_variable, port in free_ports_env().items():
        monkeypatch.setenv(port_variable, port)
    (tmp_path / "text.pem").write_text("not a key\n")
    (tmp_path / "oct.json").write_text(
        '{"keys": [{"kty": "oct", "k": "c2VjcmV0LXNlY3JldC1zZWNyZXQ"}]}'
    )
    monkeypatch.setenv(variable, value.replace("{tmp}", str(tmp_path)))
    assert cli_main(["run"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Refusing to start: ") and said in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("ttl", "said"),
    [
        ("99999999d", "ticketline token: --ttl: '99999999d' is longer than a token may live"),
        ("0m", "ticketline token: --ttl: a token that expires when issued"),
        ("soon", "ticketline token: --ttl: not a duration: 'soon'"),
    ],
)
def test_a_token_lifetime_out_of_bounds_is_refused(
    ttl: str,
    said: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """`ticketline token --ttl` obeys the bounds TICKETLINE_AUTH_TOKEN_TTL_DEFAULT has."""
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path / "data"))
    assert cli_main(["token", "--role", "admin", "--subject", "x", "--ttl", ttl]) == 2
    assert said in capsys.readouterr().err
    assert cli_main(["token", "--role", "admin", "--subject", "x", "--ttl", "366d"]) == 0


@pytest.mark.parametrize("backend", ["sqlite"])
def test_the_trusted_proxies_reach_the_server(platform: Platform) -> None:
    """Behind a TLS proxy elsewhere than 127.0.0.1, its X-Forwarded-Proto is what makes the
    console's cookie Secure: the setting is the server's."""
    from shared.app.runtime import make_server

    assert make_server(platform, "console", "127.0.0.1", 0).config.forwarded_allow_ips in (
        "127.0.0.1,::1",
        "127.0.0.1",
    )
    platform.settings.forwarded_allow_ips = "10.0.0.5,10.0.0.6"
    server = make_server(platform, "console", "127.0.0.1", 0)
    assert server.config.forwarded_allow_ips == "10.0.0.5,10.0.0.6"
