"""Passwords, sessions and CSRF tokens for the browser pages (pure functions over a server secret).

- Passwords are stored as ``scrypt$n$r$p$salt$hash`` (``hashlib.scrypt``, salt 16 bytes, n=2**14):
  memory-hard, in the standard library, and checked in constant time.
- A session is a signed cookie ``payload.signature`` (HMAC-SHA256 of the base64 JSON payload with the
  server secret) holding the user name, its role, the customer it is bound to, the expiry and a random
  session id. Nothing is stored server-side, so a restart keeps sessions; the expiry is inside the signed
  payload, so a stolen cookie stops working at the latest ``session_ttl_min`` after login, and rotating
  the secret file logs everybody out.
- CSRF: every state-changing form carries ``csrf = HMAC(secret, "csrf:" + nonce)`` where the nonce is a
  random value in its own cookie (set on the first page view, before login, so the login form is covered
  too). A cross-site page can make the browser send the cookie but cannot read it, hence cannot compute
  the token; ``SameSite=Lax`` cookies are a second fence.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_PASSWORD = 1024  # characters: scrypt of a megabyte password is a denial of service
MAX_COOKIE = 4096

OPERATOR, CUSTOMER = "operator", "customer"


def hash_password(password: str, *, salt: bytes | None = None) -> str:
    salt = salt if salt is not None else secrets.token_bytes(16)
    digest = hashlib.scrypt(password.encode(), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=32)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${_b64(salt)}${_b64(digest)}"


def verify_password(password: str, stored: str) -> bool:
    """Constant-time check; a malformed stored hash or an oversized password is simply False."""
    if len(password) > MAX_PASSWORD:
        return False
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt" or not (2 <= int(n) <= 2**20 and 1 <= int(r) <= 32 and 1 <= int(p) <= 16):
            return False
        expected = _unb64(digest)
        got = hashlib.scrypt(password.encode(), salt=_unb64(salt), n=int(n), r=int(r), p=int(p), dklen=len(expected), maxmem=2**27)
    except (ValueError, TypeError):
        return False
    return hmac.compare_digest(got, expected)


def is_password_hash(value: str) -> bool:
    parts = value.split("$")
    return len(parts) == 6 and parts[0] == "scrypt" and all(parts[1:4]) and parts[1].isdigit()


@dataclass(frozen=True, slots=True)
class Session:
    user: str
    role: str  # operator | customer
    customer: str | None  # the customer a customer user is bound to
    expires: float  # unix seconds
    sid: str


def sign_session(session: Session, secret: bytes) -> str:
    payload = _b64(json.dumps({"u": session.user, "r": session.role, "c": session.customer, "e": session.expires, "s": session.sid}, separators=(",", ":")).encode())
    return f"{payload}.{_mac(secret, payload)}"


def read_session(cookie: str | None, secret: bytes, now: float) -> Session | None:
    """The session in a cookie, or None if it is missing, forged, malformed or expired."""
    if not cookie or len(cookie) > MAX_COOKIE or cookie.count(".") != 1:
        return None
    payload, signature = cookie.split(".")
    if not hmac.compare_digest(signature, _mac(secret, payload)):
        return None
    try:
        data = json.loads(_unb64(payload))
        session = Session(user=str(data["u"]), role=str(data["r"]), customer=data["c"], expires=float(data["e"]), sid=str(data["s"]))
    except (ValueError, KeyError, TypeError):
        return None
    return session if session.expires > now and session.role in (OPERATOR, CUSTOMER) else None


class LoginThrottle:
    """At most ``attempts`` failed logins per user name within ``window_s``; then that name is refused
    (without checking the password) until the window has passed. In memory: a restart forgets, which
    only gives an attacker one more window; scrypt already makes each guess cost ~50 ms of CPU."""

    def __init__(self, attempts: int = 5, window_s: float = 300.0, max_names: int = 10_000) -> None:
        self.attempts, self.window_s, self.max_names = attempts, window_s, max_names
        self._failures: dict[str, list[float]] = {}

    def blocked(self, name: str, now: float) -> bool:
        recent = [t for t in self._failures.get(name, []) if now - t < self.window_s]
        if recent:
            self._failures[name] = recent
        else:
            self._failures.pop(name, None)
        return len(recent) >= self.attempts

    def failed(self, name: str, now: float) -> None:
        if len(self._failures) >= self.max_names and name not in self._failures:  # bounded memory: forget the oldest
            self._failures.pop(next(iter(self._failures)))
        self._failures.setdefault(name, []).append(now)

    def succeeded(self, name: str) -> None:
        self._failures.pop(name, None)


def new_nonce() -> str:
    return secrets.token_urlsafe(18)


def csrf_token(nonce: str, secret: bytes) -> str:
    return _mac(secret, f"csrf:{nonce}")


def csrf_ok(nonce: str | None, token: str | None, secret: bytes) -> bool:
    if not nonce or not token or len(nonce) > 64 or len(token) > 128:
        return False
    return hmac.compare_digest(token, csrf_token(nonce, secret))


def _mac(secret: bytes, text: str) -> str:
    return _b64(hmac.new(secret, text.encode(), hashlib.sha256).digest())


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
