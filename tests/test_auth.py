"""Authentication and HTTP hardening: tokens (forged, expired, wrong algorithm, none),
RS256 with a JWKS file, API keys, scopes, rate limiting, headers, CORS, body limits,
personal data kept out of logs."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from pydantic import ValidationError

from services.intake.schemas import RECEIVE_EXAMPLE
from shared.app.cli import main as cli_main
from shared.app.config import ApiKeyEntry, AuthSettings, Settings
from shared.app.platform import Platform
from shared.app.registry import app_factory
from shared.http.auth.personal_data import PersonalDataFilter, mask_payload, redact
from shared.http.auth.tokens import (
    SCOPES,
    Authenticator,
    KeySetUnavailable,
    api_key_hash,
    hs256_secret,
    issue_token,
)
from shared.http.context import allow
from tests.support.auth import TEST_JWT_SECRET, token_for
from tests.support.ports import free_port


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def raw_token(header: dict[str, Any], claims: dict[str, Any], key: bytes | None) -> str:
    """A JWT assembled by hand (PyJWT refuses to make some of the bad ones we need)."""
    signing_input = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}"
    signature = hmac.new(key, signing_input.encode(), hashlib.sha256).digest() if key else b""
    return f"{signing_input}.{b64(signature)}"


def good_claims(**changes: Any) -> dict[str, Any]:
    now = int(time.time())
    claims = {
        "sub": "agent-1",
        "role": "call_center_agent",
        "iss": "ticketline",
        "aud": "ticketline",
        "iat": now,
        "exp": now + 600,
    }
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


@asynccontextmanager
async def raw_client(platform: Platform, **headers: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app_factory("intake")(platform))
    async with httpx.AsyncClient(
        transport=transport, base_url="http://intake.test", headers=headers
    ) as client:
        yield client


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_bad_tokens_are_401(platform: Platform) -> None:
    secret = TEST_JWT_SECRET.encode()
    hs = {"alg": "HS256", "typ": "JWT"}
    cases = {
        "no credentials": {},
        "garbage": bearer("not-a-jwt"),
        "unknown scheme": {"Authorization": "Basic YWxpY2U6cHc="},
        "forged (other key)": bearer(raw_token(hs, good_claims(), b"someone else's key")),
        "tampered claims": bearer(
            token_for("call_center_agent").rsplit(".", 2)[0]
            + "."
            + b64(json.dumps(good_claims(role="admin")).encode())
            + "."
            + token_for("call_center_agent").rsplit(".", 1)[1]
        ),
        "expired": bearer(raw_token(hs, good_claims(exp=int(time.time()) - 3600), secret)),
        "alg none": bearer(raw_token({"alg": "none", "typ": "JWT"}, good_claims(), None)),
        "alg HS512": bearer(jwt.encode(good_claims(), secret, algorithm="HS512")),
        "wrong audience": bearer(raw_token(hs, good_claims(aud="elsewhere"), secret)),
        "wrong issuer": bearer(raw_token(hs, good_claims(iss="evil"), secret)),
        "no exp": bearer(raw_token(hs, good_claims(exp=None), secret)),
        "unknown role": bearer(raw_token(hs, good_claims(role="root"), secret)),
        "system role": bearer(raw_token(hs, good_claims(role="system"), secret)),
        "regional center without region": bearer(
            raw_token(hs, good_claims(role="regional_center"), secret)
        ),
        "not yet valid (nbf)": bearer(
            raw_token(hs, good_claims(nbf=int(time.time()) + 3600), secret)
        ),
        "issued in the future (iat)": bearer(
            raw_token(hs, good_claims(iat=int(time.time()) + 3600), secret)
        ),
        "unknown API key": {"X-API-Key": "tlk_guess"},
        "a good token beside an unknown API key": {
            **bearer(raw_token(hs, good_claims(), secret)),
            "X-API-Key": "tlk_guess",
        },
    }
    async with raw_client(platform) as client:
        for name, headers in cases.items():
            response = await client.get("/tickets", headers=headers)
            assert response.status_code == 401, name
            # Before anything else the request asks: its query is not looked at first.
            for query in ("bogus=1", "limit=5&limit=6", "region=east%00"):
                odd = await client.get(f"/tickets?{query}", headers=headers)
                assert odd.status_code == 401, (name, query)
            for body in ("{", '{"a": 1, "a": 2}', '{"customer": "x\\u0000"}'):
                json_headers = {**headers, "Content-Type": "application/json"}
                odd = await client.post("/tickets", content=body, headers=json_headers)
                assert odd.status_code == 401, (name, body)
            assert response.headers["www-authenticate"].startswith("Bearer"), name
            assert response.json()["type"].endswith("/unauthorized"), name
        ok = await client.get("/tickets", headers=bearer(raw_token(hs, good_claims(), secret)))
        assert ok.status_code == 200
        # Either header twice: which credential acts would be a guess (even the same one).
        good = f"Bearer {raw_token(hs, good_claims(), secret)}"
        for twice in ([("Authorization", good)] * 2, [("X-API-Key", "tlk_a"), ("X-API-Key", "b")]):
            response = await client.get("/tickets", headers=twice)
            assert response.status_code == 401, twice
            assert "send one credential" in response.json()["detail"]


# Correctly signed tokens whose claims have another shape than documented: each would
# widen or blur access if read loosely (a list region read as "no region" = every region).
ODD_CLAIMS: dict[str, dict[str, Any]] = {
    "region a list": {"role": "dispatcher", "region": ["east"]},
    "region a number": {"role": "dispatcher", "region": 7},
    "region null": {"role": "dispatcher", "region": None},
    "region empty": {"role": "dispatcher", "region": ""},
    "region an object": {"role": "regional_center", "region": {"name": "east"}},
    "region too long": {"role": "dispatcher", "region": "e" * 33},
    "region with a NUL": {"role": "dispatcher", "region": "east\u0000"},
    "scope a list": {"scope": ["tickets:read"]},
    "scope empty": {"scope": ""},
    "scope a number": {"scope": 1},
    "scope with a control character": {"scope": "tickets:read\u0007"},
    "sub a number": {"sub": 42},
    "sub a list": {"sub": ["agent-1"]},
    "sub empty": {"sub": ""},
    "sub too long for actor_subject": {"sub": "a" * 201},
    "sub with a NUL": {"sub": "agent\u0000"},
    "sub with a lone surrogate": {"sub": "agent\ud800"},
    "sub with a newline": {"sub": "agent\nadmin"},
    "sub with a next-line (C1)": {"sub": "agent\u0085admin"},
    "role a list": {"role": ["admin"]},
    "role a number": {"role": 1},
    "role an object": {"role": {"name": "admin"}},
    "role too long for actor_role": {"role": "admin" * 11},
    "role null": {"role": None, "__keep_null__": True},
    "location a list": {"role": "parts_clerk", "location": ["SP-1"]},
    "location a number": {"role": "parts_clerk", "location": 1},
    "location too long": {"role": "parts_clerk", "location": "L" * 25},
    "exp as text": {"exp": str(int(time.time()) + 600)},
    "iat as text": {"iat": str(int(time.time()))},
}


def odd_token(changes: dict[str, Any]) -> str:
    claims = good_claims()
    keep_null = changes.pop("__keep_null__", False) or "region" in changes
    claims.update(changes)
    if not keep_null:
        claims = {k: v for k, v in claims.items() if v is not None}
    # json.dumps keeps \u0000 and lone surrogates as escapes, as an identity provider could.
    return raw_token({"alg": "HS256", "typ": "JWT"}, claims, TEST_JWT_SECRET.encode())


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_signed_tokens_with_oddly_shaped_claims_are_401(platform: Platform) -> None:
    async with raw_client(platform) as client:
        for name, changes in ODD_CLAIMS.items():
            response = await client.get("/tickets", headers=bearer(odd_token(dict(changes))))
            assert response.status_code == 401, (name, response.text)
            assert 'error="invalid_token"' in response.headers["www-authenticate"], name
            assert response.json()["type"].endswith("/unauthorized"), name
        # The documented shapes pass (region case-insensitive, scopes space-separated).
        for changes in (
            {"role": "dispatcher", "region": "East"},
            {"scope": "tickets:read audit:export"},
            {"role": "parts_clerk", "location": "SP-HZ-01", "sub": "clerk-1"},
        ):
            token = odd_token(changes)
            response = await client.get("/tickets", headers=bearer(token))
            assert response.status_code in (200, 403), (changes, response.text)


def test_every_credential_goes_through_one_claims_schema(tmp_path: Path) -> None:
    from shared.http.auth.tokens import Claims, InvalidCredentials

    verifier = Authenticator(Settings(data_dir=tmp_path, auth=AuthSettings(
        jwt_secret=TEST_JWT_SECRET,
        api_keys={api_key_hash("k-good"): ApiKeyEntry(name="acme", region="East")},
    )))  # fmt: skip
    good = verifier.verify_api_key("k-good")
    assert isinstance(good, Claims) and (good.subject, good.region) == ("apikey:acme", "east")
    with pytest.raises(InvalidCredentials):
        verifier.verify_api_key("k-unknown")
    # An entry the schema refuses is refused with the settings (the start), not per request.
    for entry, said in (
        (ApiKeyEntry(name="x" * 200), "at most 200 characters"),
        (ApiKeyEntry(name="acme", role="root"), "unknown role 'root'"),
        (ApiKeyEntry(name="acme", region=""), "claim 'region'"),
        (ApiKeyEntry(name="acme", role="regional_center"), "needs a region"),
    ):
        with pytest.raises(ValidationError, match=said):
            AuthSettings(jwt_secret=TEST_JWT_SECRET, api_keys={api_key_hash("k"): entry})
    assert isinstance(verifier.verify_token(token_for("auditor")), Claims)
    # Only tokens the services accept are issued.
    with pytest.raises(ValueError):
        issue_token(Settings(auth=AuthSettings(jwt_secret=TEST_JWT_SECRET)), role="auditor",
                    subject="a" * 201)  # fmt: skip


def test_a_short_hs256_secret_is_said_once_in_the_log_not_raw(tmp_path) -> None:
    """PyJWT warns raw on stderr at each signature with a short key: the platform says it
    once, in its log, naming the setting."""
    import os
    import subprocess
    import sys

    env = os.environ | {"TICKETLINE_DATA_DIR": str(tmp_path)}
    env["TICKETLINE_AUTH_JWT_SECRET"] = "short-secret"
    done = subprocess.run(
        [sys.executable, "-m", "shared.app.cli", "token", "--role", "auditor", "--subject", "a"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert done.stdout.count(".") == 2  # the token
    (said,) = done.stderr.splitlines()
    assert "TICKETLINE_AUTH_JWT_SECRET is 12 bytes: HS256 wants at least 32" in said


def rsa_pair() -> tuple[str, str, rsa.RSAPrivateKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    public = (
        key.public_key()
        .public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        .decode()
    )
    return private, public, key


def test_rs256_with_a_jwks_file_refuses_hs256_and_key_confusion(tmp_path: Path) -> None:
    private, public, key = rsa_pair()
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key()))
    jwks = tmp_path / "jwks.json"
    jwks.write_text(json.dumps({"keys": [{**jwk, "kid": "k1", "use": "sig", "alg": "RS256"}]}))
    (tmp_path / "private.pem").write_text(private)
    settings = Settings(
        data_dir=tmp_path,
        auth=AuthSettings(jwks_file=jwks, private_key_file=tmp_path / "private.pem"),
    )
    verifier = Authenticator(settings)
    assert verifier.algorithm == "RS256"
    # From an identity provider (with kid) and from `ticketline token` (without).
    idp = jwt.encode(good_claims(sub="alice"), private, algorithm="RS256", headers={"kid": "k1"})
    assert verifier.verify_token(idp).subject == "alice"
    local = issue_token(settings, role="auditor", subject="aud-1")
    assert verifier.verify_token(local).role == "auditor"
    from shared.http.auth.tokens import InvalidCredentials

    for bad in (
        jwt.encode(good_claims(), "a shared secret of at least 32 bytes", algorithm="HS256"),
        # The classic confusion: HMAC-signed with the public key as the secret.
        raw_token({"alg": "HS256", "typ": "JWT"}, good_claims(), public.encode()),
        jwt.encode(good_claims(), rsa_pair()[0], algorithm="RS256", headers={"kid": "k1"}),
        jwt.encode(good_claims(), private, algorithm="RS256", headers={"kid": "other"}),
    ):
        with pytest.raises(InvalidCredentials):
            verifier.verify_token(bad)
    # A public key file works the same way.
    (tmp_path / "public.pem").write_text(public)
    by_file = Authenticator(Settings(auth=AuthSettings(public_key_file=tmp_path / "public.pem")))
    assert by_file.verify_token(idp).subject == "alice"


def test_keys_rotate_and_a_withdrawn_one_stops_being_honoured(tmp_path: Path) -> None:
    """Two keys while they rotate: a token without a kid (``ticketline token``) signed by
    either passes; a key withdrawn from the provider's set is refused once the set's cache
    lapses (each key found was cached for good); an API key's subject is no token's."""
    from shared.http.auth.tokens import InvalidCredentials

    (old_private, _, old_key), (new_private, _, new_key) = rsa_pair(), rsa_pair()

    def jwk(key: rsa.RSAPrivateKey, kid: str) -> dict[str, Any]:
        return {**json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(key.public_key())), "kid": kid}

    ec_key = ec.generate_private_key(ec.SECP256R1()).public_key()
    ec_jwk = {**json.loads(jwt.algorithms.ECAlgorithm.to_jwk(ec_key)), "kid": "e"}
    served: dict[str, Any] = {"keys": [ec_jwk, jwk(old_key, "a"), jwk(new_key, "b")]}
    fetches: list[int] = []

    class KeySet(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 (the http.server protocol)
            fetches.append(1)
            if served.get("down"):
                self.send_error(500)
                return
            body = json.dumps(served).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), KeySet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/jwks.json"
        verifier = Authenticator(Settings(auth=AuthSettings(jwks_url=url, jwks_cache_seconds=0)))
        assert verifier.may_fetch_keys("a token not verified yet")
        for private in (old_private, new_private):  # no kid: each RSA key of the set is tried
            token = jwt.encode(good_claims(sub=f"s-{private[-40:-30]}"), private, "RS256")
            assert verifier.verify_token(token).role == "call_center_agent"
        signed_a = jwt.encode(good_claims(sub="x-1"), old_private, "RS256", headers={"kid": "a"})
        assert verifier.verify_token(signed_a).subject == "x-1"
        cached = Authenticator(Settings(auth=AuthSettings(jwks_url=url, jwks_cache_seconds=60)))
        cached.verify_token(signed_a)
        assert not cached.may_fetch_keys(signed_a)  # verified lately: no thread hop for it
        served["keys"] = [jwk(new_key, "b")]  # "a" withdrawn
        later = jwt.encode(good_claims(sub="x-2"), old_private, "RS256", headers={"kid": "a"})
        with pytest.raises(InvalidCredentials):
            verifier.verify_token(later)
        as_key = jwt.encode(good_claims(sub="apikey:acme"), new_private, "RS256")
        with pytest.raises(InvalidCredentials, match="an API key's"):
            verifier.verify_token(as_key)
        # Anyone can send an unknown kid: it fetches the set again once per cooldown only.
        cached.verify_token(signed_a)
        before = len(fetches)
        for n in range(3):
            stranger = jwt.encode(
                good_claims(sub=f"k{n}"), new_private, "RS256", headers={"kid": "z"}
            )
            with pytest.raises(InvalidCredentials, match="matches the token's kid"):
                cached.verify_token(stranger)
        assert len(fetches) - before <= 1
        # The provider down is the service's outage (503), not the caller's bad token.
        served["down"] = True
        fresh = jwt.encode(good_claims(sub="x-3"), new_private, "RS256", headers={"kid": "b"})
        with pytest.raises(KeySetUnavailable):
            verifier.verify_token(fresh)
    finally:
        server.shutdown()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_a_wildcard_scope_is_no_scope(platform: Platform) -> None:
    """ "*" is what an absent scope means, never a scope a token lists."""
    for scope in ("*", "tickets:read *"):
        token = jwt.encode(good_claims(scope=scope), TEST_JWT_SECRET, algorithm="HS256")
        async with raw_client(platform, **bearer(token)) as client:
            denied = await client.post("/tickets", json=RECEIVE_EXAMPLE)
        assert denied.status_code == 403, (scope, denied.text)
    # Nor does `ticketline token` issue what the services refuse: an API key's subject.
    with pytest.raises(ValueError, match="an API key's"):
        issue_token(platform.settings, role="auditor", subject="apikey:ops")


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_an_identity_provider_out_of_reach_is_a_503(platform: Platform) -> None:
    """Its key set unreachable is the service's outage: a client must not throw away a
    good token for it (401 says the token is bad)."""
    private, _, _ = rsa_pair()
    platform.settings.auth = AuthSettings(jwks_url=f"http://127.0.0.1:{free_port()}/jwks")
    token = jwt.encode(good_claims(), private, algorithm="RS256", headers={"kid": "k1"})
    async with raw_client(platform, **bearer(token)) as client:
        answer = await client.get("/tickets")
    assert answer.status_code == 503 and "key set cannot be fetched" in answer.json()["detail"]


def test_embedded_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(jwt_secret=None))
    assert hs256_secret(settings) == hs256_secret(settings)
    assert (tmp_path / "auth-jwt.key").stat().st_mode & 0o077 == 0
    token = issue_token(settings, role="dispatcher", subject="d", region="East")
    claims = Authenticator(settings).verify_token(token)
    assert (claims.role, claims.region) == ("dispatcher", "east")


def test_token_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("TICKETLINE_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("TICKETLINE_AUTH_JWT_SECRET", raising=False)
    code = cli_main(["token", "--role", "regional_center", "--region", "west", "--subject", "rc"])
    assert code == 0
    out, err = capsys.readouterr()
    token = out.strip()
    claims = Authenticator(Settings(data_dir=tmp_path)).verify_token(token)
    assert (claims.subject, claims.role, claims.region) == ("rc", "regional_center", "west")
    # The first token generated the key, and says so: only this data directory's services
    # accept it. The next one signs with that key, silently.
    assert f"generated a new signing key at {tmp_path / 'auth-jwt.key'}" in err
    assert cli_main(["token", "--role", "auditor", "--subject", "a"]) == 0
    assert "generated" not in capsys.readouterr().err
    # A regional center's token needs its region.
    assert cli_main(["token", "--role", "regional_center", "--subject", "r"]) == 2
    # A scope no route requires would make a token that may do nothing.
    scoped = ["token", "--role", "auditor", "--subject", "a", "--scope", "audit:export"]
    assert cli_main(scoped) == 0
    assert Authenticator(Settings(data_dir=tmp_path)).verify_token(
        capsys.readouterr().out.strip()
    ).scopes == {"audit:export"}
    with pytest.raises(SystemExit) as refused:
        cli_main([*scoped[:-1], "audit:exports"])
    assert refused.value.code == 2 and "invalid choice" in capsys.readouterr().err
    assert cli_main(["api-key", "--name", "acme"]) == 0
    out = capsys.readouterr().out
    assert "TICKETLINE_AUTH_API_KEYS" in out
    # An entry the services would refuse is never printed.
    assert cli_main(["api-key", "--name", "acme", "--region", "bad region!"]) == 2
    assert cli_main(["api-key", "--name", " "]) == 2
    assert "TICKETLINE_AUTH_API_KEYS" not in capsys.readouterr().out


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_api_keys_act_as_call_center_software(
    database_url: str, clock, tmp_path: Path
) -> None:
    key = "tlk_acme-secret"
    auth = AuthSettings(
        jwt_secret=TEST_JWT_SECRET,
        api_keys={api_key_hash(key): ApiKeyEntry(name="acme-cc")},
    )
    settings = Settings(database_url=database_url, data_dir=tmp_path, auth=auth)
    platform = Platform.from_settings(settings, clock=clock)
    try:
        async with raw_client(platform) as client:
            created = await client.post(
                "/tickets", json=RECEIVE_EXAMPLE, headers={"X-API-Key": key}
            )
            assert created.status_code == 201, created.text
            tid = created.json()["ticket_id"]
            again = await client.get(f"/tickets/{tid}", headers={"Authorization": f"ApiKey {key}"})
            assert again.status_code == 200
            assert (await client.get("/tickets", headers={"X-API-Key": "wrong"})).status_code == 401
            # A key is a call-center agent: no audit export.
            export = await client.get("/audit/export", headers={"X-API-Key": key})
            assert export.status_code == 403
        events = await platform.db.read(lambda c: platform.store.read_stream(c, tid))
        assert events[0].actor.subject == "apikey:acme-cc"
        assert events[0].actor.role == "call_center_agent"
    finally:
        await platform.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_scope_limited_token_gets_403_naming_the_scope(platform: Platform) -> None:
    read_only = token_for("call_center_agent", scopes=["tickets:read"])
    async with raw_client(platform, **bearer(read_only)) as client:
        assert (await client.get("/tickets")).status_code == 200
        denied = await client.post("/tickets", json=RECEIVE_EXAMPLE)
    assert denied.status_code == 403
    assert denied.json()["required_scope"] == "tickets:write"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_intake_is_rate_limited_per_caller(database_url: str, clock, tmp_path) -> None:
    auth = AuthSettings(jwt_secret=TEST_JWT_SECRET, intake_burst=2, intake_rate_per_minute=1)
    settings = Settings(database_url=database_url, data_dir=tmp_path, auth=auth)
    platform = Platform.from_settings(settings, clock=clock)
    try:
        async with raw_client(platform) as client:
            first = bearer(token_for("call_center_agent", subject="a"))
            bodies = []
            for n in range(2):
                body = {**RECEIVE_EXAMPLE, "product": {**RECEIVE_EXAMPLE["product"]}}
                body["product"]["serial_number"] = f"RL-{n}"
                bodies.append(body)
                keyed = {**first, "Idempotency-Key": f"rl-{n}"}
                assert (await client.post("/tickets", json=body, headers=keyed)).status_code == 201
            limited = await client.post("/tickets", json=RECEIVE_EXAMPLE, headers=first)
            assert limited.status_code == 429
            assert int(limited.headers["retry-after"]) >= 1
            assert limited.json()["type"].endswith("/rate-limited")
            # A retry of a ticket already opened gets its answer, limited or not; a new
            # key is limited, and records nothing (its retry later is a fresh command).
            retry = {**first, "Idempotency-Key": "rl-1"}
            replayed = await client.post("/tickets", json=bodies[1], headers=retry)
            assert replayed.status_code == 201 and replayed.headers["idempotent-replayed"] == "true"
            fresh = {**first, "Idempotency-Key": "rl-new"}
            assert (await client.post("/tickets", json=bodies[0], headers=fresh)).status_code == 429
            # Reads are not limited, and another caller has its own bucket.
            assert (await client.get("/tickets", headers=first)).status_code == 200
            other = bearer(token_for("call_center_agent", subject="b"))
            assert (
                await client.post("/tickets", json=RECEIVE_EXAMPLE, headers=other)
            ).status_code == 201
    finally:
        await platform.close()


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_security_headers_cors_off_and_body_limit(platform: Platform) -> None:
    async with raw_client(platform, **bearer(token_for("call_center_agent"))) as client:
        response = await client.get("/tickets", headers={"Origin": "https://evil.example"})
        assert response.headers["x-content-type-options"] == "nosniff"
        assert response.headers["x-frame-options"] == "DENY"
        assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
        assert response.headers["referrer-policy"] == "no-referrer"
        assert response.headers["cache-control"] == "no-store"
        assert "access-control-allow-origin" not in response.headers
        preflight = await client.options(
            "/tickets",
            headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "POST"},
        )
        assert "access-control-allow-origin" not in preflight.headers
        # Security headers on errors too (here: 401 without the client's token).
        anonymous = await client.get("/tickets", headers={"Authorization": ""})
        assert anonymous.status_code == 401 and anonymous.headers["x-frame-options"] == "DENY"
        big = json.dumps({**RECEIVE_EXAMPLE, "pad": "x" * 1_100_000}).encode()
        too_big = await client.post(
            "/tickets", content=big, headers={"Content-Type": "application/json"}
        )
        assert too_big.status_code == 413 and too_big.json()["status"] == 413
        assert too_big.headers["x-frame-options"] == "DENY"
        assert too_big.headers["cache-control"] == "no-store"

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(20):
                yield b"x" * 100_000

        chunked = await client.post(
            "/tickets", content=chunks(), headers={"Content-Type": "application/json"}
        )
        assert chunked.status_code == 413 and chunked.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_cors_allow_list_turns_it_on(database_url: str, clock, tmp_path) -> None:
    auth = AuthSettings(jwt_secret=TEST_JWT_SECRET, cors_allow_origins=["https://ops.example"])
    platform = Platform.from_settings(
        Settings(database_url=database_url, data_dir=tmp_path, auth=auth), clock=clock
    )
    try:
        async with raw_client(platform) as client:
            ok = await client.options(
                "/tickets",
                headers={"Origin": "https://ops.example", "Access-Control-Request-Method": "GET"},
            )
            assert ok.headers["access-control-allow-origin"] == "https://ops.example"
            other = await client.options(
                "/tickets",
                headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"},
            )
            assert "access-control-allow-origin" not in other.headers
            # A refused preflight is a problem like every other error.
            assert other.status_code == 400
            assert other.headers["content-type"] == "application/problem+json"
            assert "origin" in other.json()["detail"].lower()
            # Every request header a route reads may cross (the call center's API key too).
            keyed = await client.options(
                "/tickets",
                headers={
                    "Origin": "https://ops.example",
                    "Access-Control-Request-Method": "POST",
                    "Access-Control-Request-Headers": "X-API-Key, X-Correlation-ID, Idempotency-Key",
                },
            )
            assert keyed.status_code == 200, keyed.text
    finally:
        await platform.close()


def test_personal_data_never_reaches_the_log(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("ticketline.test")
    caplog.handler.addFilter(PersonalDataFilter())
    with caplog.at_level(logging.INFO):
        logger.info(
            "calling customer %s about ticket %s", "+86 138-1234-5678", "TL-20261102-000001"
        )
        logger.info("body %s", json.dumps(RECEIVE_EXAMPLE))
        logger.info("update address_line=1_Garden_Road phone=13812345678")
    text = caplog.text
    assert "1234" not in text.replace("TL-20261102-000001", "")
    assert RECEIVE_EXAMPLE["address"]["line"] not in text
    assert RECEIVE_EXAMPLE["customer"]["phone"] not in text
    assert "TL-20261102-000001" in text  # ticket numbers and ids stay readable
    assert redact("ticket 3f2a1b4c-1234-4567-8901-123456789012") == (
        "ticket 3f2a1b4c-1234-4567-8901-123456789012"
    )


def test_mask_payload_masks_nested_phone_and_street() -> None:
    masked = mask_payload(
        {
            "customer": {"name": "Li Wei", "phone": "13812345678"},
            "address": {"line": "1 Garden Road", "postcode": "310000", "region": "east"},
        }
    )
    assert masked["customer"]["phone"] == "138****5678"
    assert masked["address"] == {"line": "***", "postcode": "***", "region": "east"}
    # Another number than 8613977778888: the mask keeps the plus apart.
    assert mask_payload({"customer": {"phone": "+8613977778888"}})["customer"]["phone"] == (
        "+861******8888"
    )
    # A short number keeps at least four digits hidden (8 digits showed 7).
    short = {
        n: mask_payload({"customer": {"phone": n}})["customer"]["phone"]
        for n in ("12345678", "1234567890", "1234567")
    }
    assert short == {"12345678": "****5678", "1234567890": "12****7890", "1234567": "*******"}


@pytest.mark.parametrize("backend", ["sqlite"])
async def test_separate_service_processes_need_a_shared_verification_key(
    database_url: str, tmp_path: Path
) -> None:
    from shared.app.config import CommandRefused
    from shared.app.runtime import serve_one

    settings = Settings(
        database_url=database_url, data_dir=tmp_path, auth=AuthSettings(jwt_secret=None)
    )
    with pytest.raises(CommandRefused, match="TICKETLINE_AUTH_JWKS_URL"):
        await serve_one(settings, "intake", None)


def test_a_verified_token_is_reused_until_it_expires(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each caller sends one token many times: its verification is kept (one signature
    check per token and minute), yet never past its expiry (with the leeway)."""
    from shared.http.auth import tokens
    from shared.http.auth.tokens import TOKEN_CACHE_SECONDS, InvalidCredentials

    now = [time.time()]
    settings = Settings(data_dir=tmp_path, auth=AuthSettings(jwt_secret=TEST_JWT_SECRET))
    verifier = Authenticator(settings, clock=lambda: now[0])
    decoded: list[str] = []
    real_decode = tokens.jwt.decode
    monkeypatch.setattr(
        tokens.jwt,
        "decode",
        lambda token, *a, **k: decoded.append(token) or real_decode(token, *a, **k),
    )
    token = token_for("auditor", ttl_seconds=2 * int(TOKEN_CACHE_SECONDS))
    assert verifier.verify_token(token).role == "auditor"
    assert verifier.verify_token(token).role == "auditor"
    assert len(decoded) == 1
    now[0] += TOKEN_CACHE_SECONDS + 1  # the entry lapsed: verified again
    assert verifier.verify_token(token).role == "auditor"
    assert len(decoded) == 2
    # Past exp + leeway the cached claims are refused at once, as PyJWT would.
    now[0] += TOKEN_CACHE_SECONDS + settings.auth.leeway_seconds
    with pytest.raises(InvalidCredentials, match="expired"):
        verifier.verify_token(token)
    # A token that failed verification is never cached.
    forged = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    for _ in range(2):
        with pytest.raises(InvalidCredentials):
            verifier.verify_token(forged)


def test_a_route_requires_only_a_scope_tokens_can_carry() -> None:
    assert "tickets:read" in SCOPES
    with pytest.raises(ValueError, match="unknown scope 'ticket:read'"):
        allow("admin", scope="ticket:read")
