"""Standard Webhooks signatures: the spec's known answer, bit flips, old timestamps."""

from __future__ import annotations

import time

import pytest
from standardwebhooks.webhooks import Webhook

from daily_index.ingest.signing import SecretError, Verifier, decode_secret, sign, signed_headers
from daily_index_tests.ingest.conftest import OLD_SECRET, SECRET

# The test vector of the Standard Webhooks specification's reference libraries.
VECTOR_ID = "msg_p5jXN8AQM9LWM0D4loKWxJek"
VECTOR_TS = 1614265330
VECTOR_BODY = b'{"test": 2432232314}'
VECTOR_SIGNATURE = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="


def test_known_answer_vector() -> None:
    assert sign(SECRET, VECTOR_ID, VECTOR_TS, VECTOR_BODY) == VECTOR_SIGNATURE
    # The package the server verifies with computes the same signature.
    from datetime import UTC, datetime

    at = datetime.fromtimestamp(VECTOR_TS, UTC)
    assert Webhook(SECRET).sign(VECTOR_ID, at, VECTOR_BODY.decode()) == VECTOR_SIGNATURE


def test_the_vector_itself_is_refused_as_too_old() -> None:
    headers = {
        "webhook-id": VECTOR_ID,
        "webhook-timestamp": str(VECTOR_TS),
        "webhook-signature": VECTOR_SIGNATURE,
    }
    assert Verifier([SECRET]).verify(VECTOR_BODY, headers) is False


@pytest.mark.parametrize(("offset", "ok"), [(-299, True), (-301, False), (299, True), (301, False)])
def test_five_minute_window(offset: int, ok: bool) -> None:
    at = int(time.time()) + offset
    headers = signed_headers(SECRET, "msg_1", at, b"{}")
    assert Verifier([SECRET]).verify(b"{}", headers) is ok


def test_any_configured_secret_verifies_for_rotation() -> None:
    now = int(time.time())
    verifier = Verifier([SECRET, OLD_SECRET])
    for secret in (SECRET, OLD_SECRET):
        assert verifier.verify(b"{}", signed_headers(secret, "msg_r", now, b"{}"))
    other = "whsec_" + "c29tZSBvdGhlciBzZW5kZXIncyBzZWNyZXQ="
    assert not verifier.verify(b"{}", signed_headers(other, "msg_r", now, b"{}"))
    # Several signatures in one header (a sender mid-rotation): one valid one is enough.
    both = signed_headers(other, "msg_r", now, b"{}")["webhook-signature"]
    good = signed_headers(SECRET, "msg_r", now, b"{}")["webhook-signature"]
    headers = signed_headers(SECRET, "msg_r", now, b"{}") | {"webhook-signature": f"{both} {good}"}
    assert verifier.verify(b"{}", headers)


def _flips(text: bytes):
    for index in range(len(text)):
        for bit in range(8):
            changed = bytearray(text)
            changed[index] ^= 1 << bit
            yield bytes(changed)


def test_every_single_bit_change_is_rejected() -> None:
    verifier = Verifier([SECRET])
    msg_id, at = "msg_2Ke9bitflip", int(time.time())
    body = b'{"kpiId":"btc_price_push","value":97123.45}'
    headers = signed_headers(SECRET, msg_id, at, body)
    assert verifier.verify(body, headers)
    checked = 0
    for changed in _flips(body):
        assert not verifier.verify(changed, headers), changed
        checked += 1
    for changed in _flips(msg_id.encode()):
        text = changed.decode("latin-1")
        assert not verifier.verify(body, headers | {"webhook-id": text}), text
        checked += 1
    for changed in _flips(str(at).encode()):
        text = changed.decode("latin-1")
        assert not verifier.verify(body, headers | {"webhook-timestamp": text}), text
        checked += 1
    assert checked == 8 * (len(body) + len(msg_id) + len(str(at)))


@pytest.mark.parametrize(
    "bad",
    ["", "secret", "whsec_", "whsec_!!!notbase64", "whsec_c2hvcnQ="],
    ids=["empty", "no-prefix", "prefix-only", "not-base64", "too-short"],
)
def test_a_malformed_secret_is_refused_without_showing_it(bad: str) -> None:
    with pytest.raises(SecretError) as caught:
        decode_secret(bad, position=3)
    assert "#3" in str(caught.value)
    if len(bad) > 6:
        assert bad[6:] not in str(caught.value)
