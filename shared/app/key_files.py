"""Keys named by settings (PEM files, PEM text, JWKS), read as their users read them.

The settings check each at start with these functions, so a key that is missing, not
readable or of the wrong kind refuses the start naming its variable, instead of every
authenticated call failing (500) or checkpoints silently never being signed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey, RSAPublicKey
from jwt.algorithms import RSAAlgorithm


def read_key_file(path: Path) -> str:
    try:
        return path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else "not text"
        raise ValueError(f"cannot read the key file {str(path)!r}: {reason}") from None


def pem_text_or_file(value: str) -> bytes:
    """A PEM given inline (a secret's value) or the path of a file holding it."""
    value = value.strip()
    return value.encode() if value.startswith("-----BEGIN") else read_key_file(Path(value)).encode()


def ed25519_private_key(pem: bytes) -> Ed25519PrivateKey:
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError("not an Ed25519 private key (PEM, unencrypted)")
    return key


def _rsa_key(text: str) -> Any:
    try:  # PyJWT's own reading of the key RS256 verifies or signs with
        return RSAAlgorithm(RSAAlgorithm.SHA256).prepare_key(text)
    except (ValueError, TypeError, jwt.exceptions.InvalidKeyError):
        return None


def rs256_public_key(text: str) -> str:
    if not isinstance(_rsa_key(text), RSAPublicKey):
        raise ValueError("not an RSA public key (PEM) for RS256")
    return text


def rs256_private_key(text: str) -> str:
    if not isinstance(_rsa_key(text), RSAPrivateKey):
        raise ValueError("not an RSA private key (PEM, unencrypted) for RS256")
    return text


def json_web_key_set(text: str) -> jwt.PyJWKSet:
    try:
        found = jwt.PyJWKSet.from_json(text)
    except (ValueError, jwt.exceptions.PyJWKSetError, jwt.exceptions.PyJWKError) as exc:
        raise ValueError(f"not a usable JSON Web Key Set ({exc})") from None
    if not any(key.key_type == "RSA" for key in found.keys):  # RS256 verifies with none else
        raise ValueError("not a usable JSON Web Key Set (it holds no RSA key)")
    return found
