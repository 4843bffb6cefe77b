"""The read API's settings, from the environment: keys, the per-key rate limit, the cache."""

from __future__ import annotations

import hashlib
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass, field

KEYS_ENV = "DAILY_INDEX_API_KEYS"
RATE_LIMIT_ENV = "DAILY_INDEX_API_RATE_LIMIT"
RATE_WINDOW_ENV = "DAILY_INDEX_API_RATE_WINDOW_S"
CACHE_TTL_ENV = "DAILY_INDEX_API_CACHE_TTL_S"

MIN_KEY_LENGTH = 16
_KEY_RE = re.compile(r"[\x21-\x7e]+")
"""Printable ASCII without spaces: what fits a header unchanged."""


class ApiConfigError(ValueError):
    """A setting the API cannot start with; the message names the variable (never a key)."""


@dataclass(frozen=True)
class ApiSettings:
    """What `daily-index serve-api` runs with.

    Only SHA-256 digests of the keys are kept: the keys themselves never reach an object
    that could be logged or printed.
    """

    key_digests: tuple[bytes, ...] = field(repr=False)
    rate_limit: int = 600
    """Requests per key per `rate_window_s` (0: no limit)."""
    rate_window_s: float = 60.0
    cache_ttl_s: float = 2.0
    """How long a remote store's object version is trusted before it is asked again."""

    @classmethod
    def from_keys(cls, keys: list[str], **options: float | int) -> ApiSettings:
        return cls(tuple(digest(k.encode()) for k in keys), **options)  # type: ignore[arg-type]

    @classmethod
    def from_env(cls, environ: Mapping[str, str]) -> ApiSettings:
        """Read and check the settings.

        Raises:
            ApiConfigError: no key, a malformed key (named by its position), a bad number.
        """
        raw = environ.get(KEYS_ENV, "")
        entries = [entry.strip() for entry in raw.split(",")]
        if not any(entries):
            raise ApiConfigError(
                f"{KEYS_ENV} is not set: give one or more API keys, comma-separated "
                "(make one with `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
            )
        keys = []
        for number, entry in enumerate(entries, start=1):
            if not entry:
                raise ApiConfigError(f"{KEYS_ENV}: entry #{number} is empty")
            if not _KEY_RE.fullmatch(entry):
                raise ApiConfigError(
                    f"{KEYS_ENV}: entry #{number} has characters other than printable ASCII "
                    "(no spaces)"
                )
            if len(entry) < MIN_KEY_LENGTH:
                raise ApiConfigError(
                    f"{KEYS_ENV}: entry #{number} is {len(entry)} characters long; "
                    f"a key needs at least {MIN_KEY_LENGTH}"
                )
            keys.append(entry)
        if len(set(keys)) != len(keys):
            raise ApiConfigError(f"{KEYS_ENV}: the same key is listed twice")
        return cls.from_keys(
            keys,
            rate_limit=_number(environ, RATE_LIMIT_ENV, 600, integer=True, minimum=0),
            rate_window_s=_number(environ, RATE_WINDOW_ENV, 60.0, minimum=0.001),
            cache_ttl_s=_number(environ, CACHE_TTL_ENV, 2.0, minimum=0),
        )


def digest(key: bytes) -> bytes:
    return hashlib.sha256(key).digest()


def _number(
    environ: Mapping[str, str], name: str, default: float, *, minimum: float, integer: bool = False
) -> float:
    text = (environ.get(name) or "").strip()
    if not text:
        return default
    try:
        value = int(text) if integer else float(text)
    except ValueError:
        kind = "a whole number" if integer else "a number"
        raise ApiConfigError(f"{name} must be {kind}, got {text!r}") from None
    if not math.isfinite(value) or value < minimum:
        raise ApiConfigError(f"{name} must be at least {minimum:g}, got {text!r}")
    return value
