"""Access control: API keys for /connect, short-lived signed tokens for /ws.

A token is ``<payload>.<signature>``: the payload is base64url JSON ``{"exp": <unix time>,
"sub": <key id>}``, the signature base64url HMAC-SHA256 of the payload with the signing
secret. Your own backend can mint tokens with ``mint_token`` and the shared secret, so
/connect need not be exposed at all.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
import time
from dataclasses import dataclass, field


class TokenError(Exception):
    """A token that must not open a session; ``str()`` says why, without the token."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _sign(secret: bytes, payload: str) -> str:
    return _b64(hmac.new(secret, payload.encode(), hashlib.sha256).digest())


def mint_token(
    secret: bytes,
    ttl: float,
    subject: str = "",
    now: float | None = None,
    **extra: object,
) -> str:
    claims = {"exp": int((now or time.time()) + ttl), "sub": subject, "n": secrets.token_hex(4)}
    claims |= extra
    payload = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{payload}.{_sign(secret, payload)}"


def verify_token(secret: bytes, token: str, now: float | None = None) -> dict[str, object]:
    payload, _, signature = token.partition(".")
    if not payload or not signature:
        raise TokenError("malformed token")
    if not hmac.compare_digest(_sign(secret, payload), signature):
        raise TokenError("invalid token")
    try:
        claims = json.loads(_unb64(payload))
        expires = float(claims["exp"])
    except (ValueError, KeyError, TypeError):
        raise TokenError("malformed token") from None
    if expires < (now or time.time()):
        raise TokenError("expired token")
    return dict(claims)


@dataclass
class Access:
    """Who may connect. With no keys and no secret, everyone (local use)."""

    api_keys: tuple[str, ...]
    secret: bytes | None
    token_ttl: float
    # Signs resume tokens even with access off; replicas share TALKLINE_TOKEN_SECRET, or
    # without it the key their Redis keeps (``resumption.share_signing_key`` sets it).
    resume_secret: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)

    @property
    def enabled(self) -> bool:
        return self.secret is not None

    def key_id(self, presented: str) -> str | None:
        """An opaque id for a valid API key (never the key), or None."""
        for index, key in enumerate(self.api_keys):
            if hmac.compare_digest(key.encode(), presented.encode()):
                return f"key-{index}"
        return None

    def token_for(self, key_id: str) -> str:
        assert self.secret is not None
        return mint_token(self.secret, self.token_ttl, key_id)

    def check(self, token: str | None) -> str | None:
        """The API key id a valid token was minted for; None when access control is off."""
        if self.secret is None:
            return None
        if not token:
            raise TokenError("missing token: POST /connect with your API key to get one")
        subject = verify_token(self.secret, token).get("sub")
        return str(subject) if subject else None

    def resume_token(self, key_id: str, session_id: str, epoch: int) -> str:
        """A /ws token that carries a resume claim: the conversation and the epoch it takes."""
        return mint_token(
            self.resume_secret, self.token_ttl, key_id, resume=session_id, epoch=epoch
        )

    def resume_claim(self, token: str | None) -> tuple[str, int, str] | None:
        """The (session id, epoch, key id) a resume token carries, or None for other tokens.

        Raises ``TokenError`` for a resume token that is forged or expired."""
        if not token:
            return None
        try:
            claims = verify_token(self.resume_secret, token)
        except TokenError as error:
            if str(error) == "expired token":  # ours, but too old
                raise
            return None  # not a token this server signed for resume
        session_id, epoch = claims.get("resume"), claims.get("epoch")
        if not isinstance(session_id, str) or not isinstance(epoch, int):
            return None
        return session_id, epoch, str(claims.get("sub") or "")

    def subject(self, token: str | None) -> str | None:
        """The API key id a valid token was minted for, or None (access off, or no id)."""
        if self.secret is None or not token:
            return None
        try:
            subject = verify_token(self.secret, token).get("sub")
        except TokenError:
            return None
        return str(subject) if subject else None


def bearer(header: str | None) -> str | None:
    scheme, _, value = (header or "").partition(" ")
    return value.strip() if scheme.lower() == "bearer" and value.strip() else None
