"""Standard Webhooks signatures: `v1,<base64 HMAC-SHA256 of "id.timestamp.body">`.

Verification goes through the `standardwebhooks` package (constant-time comparison, a
5-minute timestamp window); several secrets may be valid at once, for rotation.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
from collections.abc import Mapping, Sequence

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

SECRET_PREFIX = "whsec_"  # noqa: S105 (the format's prefix, not a secret)
SIGNATURE_HEADERS = ("webhook-id", "webhook-timestamp", "webhook-signature")


class SecretError(ValueError):
    """A configured secret that is not a `whsec_<base64>` value (the message never shows it)."""


def decode_secret(secret: str, *, position: int = 1) -> bytes:
    """The key bytes of a `whsec_<base64>` secret; `position` names it in the error."""
    if not secret.startswith(SECRET_PREFIX):
        raise SecretError(f"secret #{position} does not start with {SECRET_PREFIX!r}")
    text = secret[len(SECRET_PREFIX) :]
    try:
        key = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise SecretError(f"secret #{position} is not base64 after {SECRET_PREFIX!r}") from None
    if len(key) < 16:
        raise SecretError(f"secret #{position} is shorter than 16 bytes ({len(key)})")
    return key


def sign(secret: str, msg_id: str, timestamp: int, body: bytes) -> str:
    """The `webhook-signature` value for a message (what a sender puts in its header)."""
    key = decode_secret(secret)
    signed = f"{msg_id}.{timestamp}.".encode() + body
    digest = hmac.new(key, signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def signed_headers(secret: str, msg_id: str, timestamp: int, body: bytes) -> dict[str, str]:
    """The three Standard Webhooks headers of a message, plus its content type."""
    return {
        "webhook-id": msg_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": sign(secret, msg_id, timestamp, body),
        "content-type": "application/json",
    }


class Verifier:
    """Accepts a message signed with any of the configured secrets, within 5 minutes."""

    def __init__(self, secrets: Sequence[str]):
        if not secrets:
            raise SecretError("no secret configured")
        for position, secret in enumerate(secrets, start=1):
            decode_secret(secret, position=position)
        self._hooks = [Webhook(secret) for secret in secrets]

    def verify(self, body: bytes, headers: Mapping[str, str]) -> bool:
        """Whether the headers sign exactly this body; never parses the body, never raises."""
        wanted = {name: headers.get(name, "") for name in SIGNATURE_HEADERS}
        if not all(wanted.values()):
            return False
        for hook in self._hooks:
            try:
                hook.verify(body, wanted, json_parse=False)
            except WebhookVerificationError:
                continue
            except ValueError:
                # A malformed signature list ("v1" without a comma, bad base64) or a body
                # that is not UTF-8: the package raises these instead of its own error.
                return False
            return True
        return False
