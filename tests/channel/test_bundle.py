import base64
import json

import pytest

from garrison.channel.bundle import BundleError, decode_bundle, encode_bundle
from tests.channel.conftest import Pki


def _b64(obj: object) -> str:
    return base64.b64encode(json.dumps(obj).encode()).decode()


def test_round_trip(pki: Pki) -> None:
    text = encode_bundle(
        ca_pem=pki.ca.cert_pem,
        ws_address="wss://console.example:8084",
        enrolment_token="t0k",
        console_url="https://console.example:8083",
    )
    b = decode_bundle(text)
    assert (b.version, b.ws_address, b.enrolment_token) == (1, "wss://console.example:8084", "t0k")
    assert b.ca_pem == pki.ca.cert_pem.decode()
    # whitespace from a wrapped paste and lost padding are tolerated
    wrapped = "\n".join(text[i : i + 60] for i in range(0, len(text), 60)).rstrip("=")
    assert decode_bundle(wrapped) == b


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        (None, "INSTALL_BUNDLE is not set"),
        ("   ", "INSTALL_BUNDLE is not set"),
        ("not base64 at all!!", "not valid base64"),
        (base64.b64encode(b"\xff\xfe binary").decode(), "not JSON"),
        (_b64([1, 2]), "expected a JSON object"),
        (_b64({"version": 1}), "ca_pem: missing"),
        (_b64({"version": 99, "ca_pem": "x"}), "upgrade the defender"),
    ],
)
def test_bad_bundles_explain_themselves(text: str | None, fragment: str) -> None:
    with pytest.raises(BundleError, match=fragment):
        decode_bundle(text)


def test_incomplete_fields_are_named(pki: Pki) -> None:
    bad = {
        "version": 1,
        "ca_pem": pki.ca.cert_pem.decode(),
        "ws_address": "http://nope",
        "enrolment_token": "",
    }
    with pytest.raises(BundleError) as info:
        decode_bundle(_b64(bad))
    msg = str(info.value)
    assert "ws_address" in msg and "enrolment_token" in msg and "fresh bundle" in msg


def test_truncated_bundle(pki: Pki) -> None:
    text = encode_bundle(ca_pem=pki.ca.cert_pem, ws_address="wss://h:1", enrolment_token="t")
    with pytest.raises(BundleError):
        decode_bundle(text[: len(text) // 2])


def test_fallback_addresses_round_trip_and_are_checked(pki: Pki) -> None:
    text = encode_bundle(
        ca_pem=pki.ca.cert_pem,
        ws_address="wss://a.example:8084",
        enrolment_token="t",
        ws_fallbacks=("wss://b.example:8084", "wss://a.example:8084", "wss://b.example:8084"),
    )
    b = decode_bundle(text)
    assert b.ws_addresses == ("wss://a.example:8084", "wss://b.example:8084")
    plain = decode_bundle(encode_bundle(ca_pem=pki.ca.cert_pem, ws_address="wss://a:1", enrolment_token="t"))
    assert plain.ws_addresses == ("wss://a:1",)
    raw = json.loads(base64.b64decode(text))
    for bad, fragment in ((["https://x"], "wss://host:port"), (["wss://x:1"] * 17, "at most 16")):
        with pytest.raises(BundleError, match=fragment):
            decode_bundle(_b64(raw | {"ws_fallbacks": bad}))
