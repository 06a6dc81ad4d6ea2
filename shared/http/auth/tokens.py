"""Bearer tokens (JWT) and machine API keys: issue, verify, turn into claims.

Embedded default: HS256 with a secret from ``TICKETLINE_AUTH_JWT_SECRET`` or, unset, one
generated once into the data directory. Scaled mode: RS256 against a configured public key
or JWKS (file or URL). The accepted algorithm is pinned by the configuration, never read
from the token: ``none`` is never accepted, and HS256 never once RS256 is configured (a
token HMAC-signed with the public key must not pass).
"""

from __future__ import annotations

import functools
import hashlib
import hmac
import json
import logging
import secrets
import threading
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any

import jwt
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)

from shared.app.config import ApiKeyEntry, AuthSettings, Settings, token_lifetime
from shared.app.files import key_file
from shared.app.key_files import json_web_key_set, read_key_file
from shared.http.problems import ProblemError
from shared.kernel.text import unprintable_reason

log = logging.getLogger(__name__)
# PyJWT warns on every signature with a short key, raw on stderr: said once, by us, instead.
warnings.filterwarnings("ignore", category=jwt.InsecureKeyLengthWarning)
# RFC 7518 §3.2: an HS256 key at least as long as the hash.
HS256_MIN_SECRET_BYTES = 32

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
        # Answers customers' personal-data requests: subject access, erasure, legal holds.
        "privacy_officer",
    }
)
# Roles that exist only for one region: the claim is required. A dispatcher or parts clerk
# token without region / location belongs to headquarters (every region / location).
REGION_ROLES = frozenset({"regional_center"})
ALL_SCOPES = frozenset({"*"})
# The scopes routes require (docs/access-control.md): a token limited to others may do
# nothing here, so `ticketline token --scope` offers only these.
SCOPES = frozenset(
    {
        "admin:operations",
        "audit:export",
        "customers:read",
        "customers:write",
        "events:read",
        "imports:write",
        "network:read",
        "network:write",
        "parts:read",
        "parts:write",
        "reports:read",
        "reports:write",
        "sla:read",
        "sla:write",
        "tickets:read",
        "tickets:write",
    }
)


class InvalidCredentials(Exception):
    """Missing, malformed, expired, forged or otherwise unacceptable credentials (401)."""


class TokenExpired(InvalidCredentials):
    """A token past its expiry (and the verification's leeway)."""

    def __init__(self) -> None:
        super().__init__("the token has expired")


# Column sizes the claims end up in (events.actor_subject, actor_role, region).
SUBJECT_MAX = 200
ROLE_MAX = 50
REGION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
LOCATION_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,23}$"
# RFC 6749 scope-token characters, space-separated.
SCOPE_PATTERN = r"^[\x21\x23-\x5B\x5D-\x7E]+( [\x21\x23-\x5B\x5D-\x7E]+)*$"


def _printable_subject(value: str) -> str:
    if (reason := unprintable_reason(value)) is not None:
        raise ValueError(reason)
    return value


Subject = Annotated[
    str,
    StringConstraints(min_length=1, max_length=SUBJECT_MAX),
    AfterValidator(_printable_subject),
]
Role = Annotated[str, StringConstraints(min_length=1, max_length=ROLE_MAX)]
Region = Annotated[str, StringConstraints(pattern=REGION_PATTERN, to_lower=True)]
Location = Annotated[str, StringConstraints(pattern=LOCATION_PATTERN)]
Scope = Annotated[str, StringConstraints(pattern=SCOPE_PATTERN, max_length=1000)]


class Claims(BaseModel):
    """The one claims schema every bearer token and API key is validated through.

    Strict types: a claim of another type (a ``region`` that is a list or a number, a
    ``scope`` list, a numeric ``sub``, a ``role`` object, …) or a present-but-null optional
    claim makes the credentials invalid (401) — it never widens or narrows access by
    accident of an identity provider's claim mapping. Lengths fit the columns the actor is
    stored in; text is valid text (no NUL, no lone surrogate, no control characters in the
    subject). Other claims (``jti``, …) are ignored; ``exp``/``iss``/``aud`` (and ``nbf``,
    ``iat`` when present) are checked by the signature verification before this."""

    model_config = ConfigDict(strict=True, frozen=True, extra="ignore", populate_by_name=True)

    subject: Subject = Field(alias="sub")
    role: Role
    # Dispatcher and regional center: the one region they act in (lower case).
    region: Region | None = None
    # Parts clerk: the stock location they work at.
    location: Location | None = None
    # Space-separated scopes; absent = everything the role may do.
    scope: Scope | None = None

    @field_validator("region", "location", "scope", mode="before")
    @classmethod
    def _present_means_given(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("a claim that is present must not be null")
        return value

    @model_validator(mode="after")
    def _role_and_reach(self) -> Claims:
        if self.role not in TOKEN_ROLES:
            raise ValueError(f"unknown role {self.role!r}")
        if self.role in REGION_ROLES and not self.region:
            raise ValueError(f"a {self.role} token needs a region")
        return self

    @property
    def scopes(self) -> frozenset[str]:
        # "*" is the absent claim's meaning, never a scope a token lists: a provider that
        # passes requested scopes through must not hand out everything with it.
        return frozenset(self.scope.split()) - ALL_SCOPES if self.scope else ALL_SCOPES


def validate_claims(data: Any) -> Claims:
    """``data`` (a decoded token payload, or an API key's entry) as :class:`Claims`, or
    InvalidCredentials naming the first claim that does not fit."""
    if not isinstance(data, dict):
        raise InvalidCredentials("the token's claims are not an object")
    try:
        return Claims.model_validate(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        message = str(first.get("msg", "invalid")).removeprefix("Value error, ")
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise InvalidCredentials(f"claim {where!r}: {message}" if where else message) from None


def hs256_key_file(settings: Settings) -> Path:
    """Where the embedded default keeps its generated HS256 secret."""
    return Path(settings.data_dir) / "auth-jwt.key"


def generates_signing_key(settings: Settings) -> bool:
    """Whether issuing a token now generates the embedded default's HS256 secret."""
    auth = settings.auth
    return not (auth.uses_rs256 or auth.jwt_secret or hs256_key_file(settings).exists())


def hs256_secret(settings: Settings) -> bytes:
    """The configured secret, or (embedded default) one generated once into the data dir."""
    if settings.auth.jwt_secret:
        secret = settings.auth.jwt_secret.get_secret_value().encode()
        if len(secret) < HS256_MIN_SECRET_BYTES:
            _warn_short_secret(len(secret))
        return secret
    # (made at once by whichever process asks first: `ticketline token` and the services)
    return key_file(hs256_key_file(settings), lambda: secrets.token_hex(32).encode()).strip()


@functools.cache
def _warn_short_secret(length: int) -> None:
    log.warning(
        "TICKETLINE_AUTH_JWT_SECRET is %d bytes: HS256 wants at least %d (RFC 7518 §3.2), "
        "or tokens can be forged by guessing it; use e.g. `openssl rand -hex 32`",
        length,
        HS256_MIN_SECRET_BYTES,
    )


def api_key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    return f"tlk_{secrets.token_urlsafe(32)}"


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
    issued = int(now if now is not None else time.time())
    ttl = ttl_seconds if ttl_seconds is not None else token_lifetime(auth.token_ttl_default)
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
    try:
        token_claims(claims)  # only tokens the services accept
    except InvalidCredentials as exc:
        raise ValueError(str(exc)) from None
    if auth.uses_rs256:
        if not auth.private_key_file:
            raise ValueError("RS256 is configured: set TICKETLINE_AUTH_PRIVATE_KEY_FILE to issue")
        return jwt.encode(claims, read_key_file(auth.private_key_file), algorithm="RS256")
    return jwt.encode(claims, hs256_secret(settings), algorithm="HS256")


# A fetch of the provider's key set forced by a kid not in it (a key rotated in) is made
# at most this often; the set's own cache lifespan governs the others.
REFRESH_COOLDOWN_SECONDS = 30.0


class KeySetUnavailable(ProblemError):
    """The identity provider's key set cannot be fetched now: the service's outage (503),
    not the caller's bad token — answered as such wherever it is raised."""

    def __init__(self, reason: str) -> None:
        super().__init__(
            503,
            "service-unavailable",
            "Unavailable",
            f"the identity provider's key set cannot be fetched now: {reason}",
            headers={"Retry-After": "5"},
        )


# How long a verified token's claims are reused without checking its signature again:
# each caller sends the same token on every request, and verifying it (header, HMAC or
# RSA, claims schema) is a large share of a small request. Bounded so a JWKS key that
# was withdrawn stops being honoured about as soon as the JWKS cache would notice.
TOKEN_CACHE_SECONDS = 60.0
TOKEN_CACHE_SIZE = 10_000


class _VerifiedTokens:
    """Claims of tokens that passed verification, until the earlier of their expiry (with
    the leeway, as PyJWT counts it) and ``seconds`` after they were verified. Past
    ``size`` it starts afresh. Lock-free: each dict operation is atomic."""

    def __init__(self, seconds: float, size: int, clock: Callable[[], float]) -> None:
        self.seconds, self.size, self.clock = seconds, size, clock
        # token → (claims, when it expires with the leeway, when the entry lapses)
        self._entries: dict[str, tuple[Claims, float, float]] = {}

    def get(self, token: str) -> Claims | None:
        """The cached claims; None to verify again; InvalidCredentials once expired."""
        found = self._entries.get(token)
        if found is None:
            return None
        now = self.clock()
        if now >= found[1]:
            self._entries.pop(token, None)
            raise TokenExpired()
        if now >= found[2]:
            self._entries.pop(token, None)
            return None
        return found[0]

    def holds(self, token: str) -> bool:
        """Whether ``get`` would answer without verifying ``token`` again."""
        found = self._entries.get(token)
        return found is not None and self.clock() < min(found[1], found[2])

    def put(self, token: str, claims: Claims, expires_at: float) -> None:
        if len(self._entries) >= self.size:
            self._entries.clear()
        self._entries[token] = (claims, expires_at, self.clock() + self.seconds)


class Authenticator:
    """Verifies bearer tokens and API keys against one configuration."""

    def __init__(self, settings: Settings, *, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.auth: AuthSettings = settings.auth
        seconds = min(TOKEN_CACHE_SECONDS, float(self.auth.jwks_cache_seconds))
        self._verified = _VerifiedTokens(seconds, TOKEN_CACHE_SIZE, clock)
        self._jwk_client: jwt.PyJWKClient | None = None
        self._fetching = threading.Lock()
        self._refreshed_at = -REFRESH_COOLDOWN_SECONDS
        self._jwks: jwt.PyJWKSet | None = None
        self._public_key: str | None = None
        self._secret: bytes | None = None
        # (each file was checked at start: one that does not load refuses the start)
        if self.auth.public_key_file:
            self._public_key = read_key_file(self.auth.public_key_file)
        elif self.auth.jwks_file:
            self._jwks = json_web_key_set(read_key_file(self.auth.jwks_file))
        elif self.auth.jwks_url:
            # The key set cached for its lifespan, never a key beyond it (``cache_keys``
            # kept each key found, without expiry: a withdrawn one was honoured on).
            seconds = self.auth.jwks_cache_seconds  # 0: fetched for each token verified
            self._jwk_client = jwt.PyJWKClient(
                self.auth.jwks_url,
                cache_keys=False,
                cache_jwk_set=seconds > 0,
                lifespan=max(seconds, 1),
            )
        else:
            self._secret = hs256_secret(settings)

    @property
    def algorithm(self) -> str:
        return "HS256" if self._secret is not None else "RS256"

    def may_fetch_keys(self, token: str) -> bool:
        """Whether verifying ``token`` may fetch the key set over the network (a blocking
        call): with a JWKS URL, for a token not verified lately."""
        return self._jwk_client is not None and not self._verified.holds(token)

    def _keys(self, token: str) -> list[Any]:
        """The keys that may have signed ``token``: its ``kid``'s, or without one every key
        of the set (a set holds two while keys rotate)."""
        if self._secret is not None:
            return [self._secret]
        if self._public_key is not None:
            return [self._public_key]
        kid = jwt.get_unverified_header(token).get("kid")
        keys = self._set_keys(kid)
        if not keys and self._jwk_client is not None:  # a key new since the set was fetched
            keys = self._set_keys(kid, refresh=True)
        if not keys:
            raise InvalidCredentials("no RSA key in the JWKS matches the token's kid")
        return keys

    def _set_keys(self, kid: Any, refresh: bool = False) -> list[Any]:
        """The set's RSA keys (RS256 verifies with no other) of ``kid``, or all of them."""
        jwks = self._fetched_set(refresh) if self._jwk_client is not None else self._jwks
        assert jwks is not None
        return [
            k.key for k in jwks.keys if k.key_type == "RSA" and (kid is None or k.key_id == kid)
        ]

    def _fetched_set(self, refresh: bool) -> jwt.PyJWKSet:
        """The provider's key set: one fetch at a time (callers waiting take its result),
        and a fetch forced by an unknown kid at most once per ``REFRESH_COOLDOWN_SECONDS``
        — anyone can send a kid, so it must not make the provider fetched per request."""
        client = self._jwk_client
        assert client is not None
        with self._fetching:
            if refresh and time.monotonic() - self._refreshed_at < REFRESH_COOLDOWN_SECONDS:
                refresh = False
            try:
                found = client.get_jwk_set(refresh)
            except (jwt.PyJWKClientError, jwt.PyJWKSetError) as exc:  # unreachable, or no set
                raise KeySetUnavailable(str(exc)) from None
            if refresh:
                self._refreshed_at = time.monotonic()
            return found

    def verify_token(self, token: str) -> Claims:
        """The token's claims: from the cache of verified tokens, else verified."""
        cached = self._verified.get(token)
        if cached is not None:
            return cached
        claims, exp = self._verify(token)
        self._verified.put(token, claims, exp + self.auth.leeway_seconds)
        return claims

    def _verify(self, token: str) -> tuple[Claims, float]:
        """Signature, ``exp``/``iss``/``aud`` and the claims schema; the claims and ``exp``."""
        try:
            header = jwt.get_unverified_header(token)
            if header.get("alg") != self.algorithm:
                raise InvalidCredentials(
                    f"algorithm {header.get('alg')!r} is not accepted (expected {self.algorithm})"
                )
            data = self._decoded(token)
        except jwt.ExpiredSignatureError:
            raise TokenExpired() from None
        except (jwt.PyJWTError, ValueError) as exc:
            raise InvalidCredentials(f"invalid token: {exc}") from None
        for name in ("exp", "nbf", "iat"):  # PyJWT also reads "1795820000" as a time
            value = data.get(name, 0)
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidCredentials(f"invalid token: the {name} claim is not a number")
        return token_claims(data), float(int(data["exp"]))  # as PyJWT reads it

    def _decoded(self, token: str) -> dict[str, Any]:
        """The payload of ``token`` signed by one of its possible keys."""
        *others, last = self._keys(token)
        for key in others:
            try:
                return self._decode(token, key)
            except jwt.InvalidSignatureError:
                continue
        return self._decode(token, last)

    def _decode(self, token: str, key: Any) -> dict[str, Any]:
        return jwt.decode(
            token,
            key,
            algorithms=[self.algorithm],
            audience=self.auth.audience,
            issuer=self.auth.issuer,
            leeway=self.auth.leeway_seconds,
            options={"require": ["exp", "sub", "iss", "aud"]},
        )

    def verify_api_key(self, key: str) -> Claims:
        digest = api_key_hash(key)
        # Compare every stored hash in constant time: no timing hint on which one is close.
        found = None
        for stored, candidate in self.auth.api_keys.items():
            if hmac.compare_digest(stored.lower(), digest):
                found = candidate
        if found is None:
            raise InvalidCredentials("unknown API key")
        return validate_claims(_api_key_claims(found))


# The subjects of API keys: a token naming one would act as the key (its idempotency
# records, its rate limit, its name in the audit trail).
API_KEY_SUBJECT = "apikey:"


def token_claims(data: Any) -> Claims:
    """A token's payload as :class:`Claims`: the claims schema, and no API key's subject."""
    claims = validate_claims(data)
    if claims.subject.startswith(API_KEY_SUBJECT):
        raise InvalidCredentials(f"invalid token: the subject {API_KEY_SUBJECT}… is an API key's")
    return claims


def _api_key_claims(entry: ApiKeyEntry) -> dict[str, Any]:
    claims: dict[str, Any] = {"sub": f"{API_KEY_SUBJECT}{entry.name}", "role": entry.role}
    if entry.region is not None:
        claims["region"] = entry.region
    return claims


def check_api_key_entry(entry: ApiKeyEntry) -> None:
    """ValueError naming what an entry lacks for the claims schema (checked at start:
    configured, it would be a 401 on every request made with the key)."""
    try:
        validate_claims(_api_key_claims(entry))
    except InvalidCredentials as exc:
        raise ValueError(str(exc)) from None


def api_key_entry(name: str, key: str, region: str | None = None) -> str:
    """The ``TICKETLINE_AUTH_API_KEYS`` JSON for one key (only its hash is stored); an
    entry the services would refuse (a region or name outside the claims schema) raises
    ValueError naming it."""
    if not name.strip():
        raise ValueError("--name: the software's name, e.g. acme-callcenter")
    entry = ApiKeyEntry(name=name.strip(), region=region.lower() if region else None)
    check_api_key_entry(entry)
    return json.dumps({api_key_hash(key): entry.model_dump(exclude={"role"})})
