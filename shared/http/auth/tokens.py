"""Bearer tokens (JWT) and machine API keys: issue, verify, turn into claims.

Embedded default: HS256 with a secret from ``TICKETLINE_AUTH_JWT_SECRET`` or, unset, one
generated once into the data directory. Scaled mode: RS256 against a configured public key
or JWKS (file or URL). The accepted algorithm is pinned by the configuration, never read
from the token: ``none`` is never accepted, and HS256 never once RS256 is configured (a
token HMAC-signed with the public key must not pass).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt

from shared.app.config import AuthSettings, Settings

# Roles a token may carry ("system" is the platform's own actor, never a caller).
TOKEN_ROLES = frozenset(
    {
        "call_center_agent",
        "dispatcher",
        "technician",
        "parts_clerk",
        "customer_relations",
        "regional_center",
        "auditor",
        "admin",
    }
)
# Roles that exist only for one region: the claim is required. A dispatcher or parts clerk
# token without region / location belongs to headquarters (every region / location).
REGION_ROLES = frozenset({"regional_center"})
ALL_SCOPES = frozenset({"*"})


class InvalidCredentials(Exception):
    """Missing, malformed, expired, forged or otherwise unacceptable credentials (401)."""


@dataclass(frozen=True)
class Claims:
    subject: str
    role: str
    region: str | None = None
    location: str | None = None
    scopes: frozenset[str] = field(default_factory=lambda: ALL_SCOPES)


_DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")


def parse_duration(text: str) -> int:
    """``90`` / ``90s`` / ``15m`` / ``8h`` / ``7d`` → seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"not a duration: {text!r} (e.g. 15m, 8h, 7d)")
    return int(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)]


def hs256_secret(settings: Settings) -> bytes:
    """The configured secret, or (embedded default) one generated once into the data dir."""
    if settings.auth.jwt_secret:
        return settings.auth.jwt_secret.get_secret_value().encode()
    path = Path(settings.data_dir) / "auth-jwt.key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_hex(32))
        path.chmod(0o600)
    return path.read_text().strip().encode()


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return f"tlk_{secrets.token_urlsafe(32)}"


def check_claims(role: str, region: str | None, location: str | None) -> None:
    if role not in TOKEN_ROLES:
        raise InvalidCredentials(f"unknown role {role!r}")
    if role in REGION_ROLES and not region:
        raise InvalidCredentials(f"a {role} token needs a region")


def issue_token(
    settings: Settings,
    *,
    role: str,
    subject: str,
    region: str | None = None,
    location: str | None = None,
    scopes: list[str] | None = None,
    ttl_seconds: int | None = None,
    now: float | None = None,
) -> str:
    """A signed token (HS256, or RS256 with ``private_key_file``) for local use and tests."""
    auth = settings.auth
    try:
        check_claims(role, region, location)
    except InvalidCredentials as exc:
        raise ValueError(str(exc)) from None
    issued = int(now if now is not None else time.time())
    ttl = ttl_seconds if ttl_seconds is not None else parse_duration(auth.token_ttl_default)
    claims: dict[str, Any] = {
        "sub": subject,
        "role": role,
        "iss": auth.issuer,
        "aud": auth.audience,
        "iat": issued,
        "exp": issued + ttl,
    }
    if region:
        claims["region"] = region.lower()
    if location:
        claims["location"] = location
    if scopes:
        claims["scope"] = " ".join(scopes)
    if auth.uses_rs256:
        if not auth.private_key_file:
            raise ValueError("RS256 is configured: set TICKETLINE_AUTH_PRIVATE_KEY_FILE to issue")
        return jwt.encode(claims, auth.private_key_file.read_text(), algorithm="RS256")
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")


class Authenticator:
    """Verifies bearer tokens and API keys against one configuration."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.auth: AuthSettings = settings.auth
        self._jwk_client: jwt.PyJWKClient | None = None
        self._jwks: jwt.PyJWKSet | None = None
        self._public_key: str | None = None
        self._secret: bytes | None = None
        if self.auth.public_key_file:
            self._public_key = self.auth.public_key_file.read_text()
        elif self.auth.jwks_file:
            self._jwks = jwt.PyJWKSet.from_json(self.auth.jwks_file.read_text())
        elif self.auth.jwks_url:
            self._jwk_client = jwt.PyJWKClient(
                self.auth.jwks_url, cache_keys=True, lifespan=self.auth.jwks_cache_seconds
            )
        else:
            self._secret = hs256_secret(settings)

    @property
    def algorithm(self) -> str:
        return "HS256" if self._secret is not None else "RS256"

    def _key(self, token: str) -> Any:
        if self._secret is not None:
            return self._secret
        if self._public_key is not None:
            return self._public_key
        if self._jwk_client is not None:
            return self._jwk_client.get_signing_key_from_jwt(token).key
        assert self._jwks is not None
        kid = jwt.get_unverified_header(token).get("kid")
        keys = [k for k in self._jwks.keys if kid is None or k.key_id == kid]
        if not keys:
            raise InvalidCredentials("no key in the JWKS matches the token's kid")
        return keys[0].key

    def verify_token(self, token: str) -> Claims:
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise InvalidCredentials(
                    f"algorithm {header.get('alg')!r} is not accepted (expected {self.algorithm})"
                )
            data = jwt.decode(
                token,
                self._key(token),
                algorithms=[self.algorithm],
                audience=self.auth.audience,
                issuer=self.auth.issuer,
                leeway=self.auth.leeway_seconds,
                options={"require": ["exp", "sub", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError:
            raise InvalidCredentials("the token has expired") from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidCredentials(f"invalid token: {exc}") from None
        role = data.get("role")
        region = data.get("region")
        location = data.get("location")
        if not isinstance(role, str) or not isinstance(data["sub"], str):
            raise InvalidCredentials("the token has no role")
        check_claims(role, region, location)
        scope = data.get("scope")
        scopes = frozenset(scope.split()) if isinstance(scope, str) and scope else ALL_SCOPES
        return Claims(
            subject=data["sub"],
            role=role,
            region=region.lower() if isinstance(region, str) and region else None,
            location=location if isinstance(location, str) else None,
            scopes=scopes,
        )

    def verify_api_key(self, key: str) -> Claims:
        digest = api_key_hash(key)
        # Compare every stored hash in constant time: no timing hint on which one is close.
        found = None
        for stored, entry in self.auth.api_keys.items():
            if hmac.compare_digest(stored.lower(), digest):
                found = entry
        if found is None:
            raise InvalidCredentials("unknown API key")
        region = found.region.lower() if found.region else None
        check_claims(found.role, region, None)
        return Claims(subject=f"apikey:{found.name}", role=found.role, region=region)


def api_key_entry(name: str, key: str, region: str | None = None) -> str:
    """The ``TICKETLINE_AUTH_API_KEYS`` JSON for one key (only its hash is stored)."""
    return json.dumps({api_key_hash(key): {"name": name, "region": region}})
