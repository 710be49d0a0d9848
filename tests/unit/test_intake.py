"""Request intake: routing headers are read raw, once, and every field is bounded."""

from __future__ import annotations

import orjson
import pytest

from compliance.jurisdictions import DataClass
from gateway.errors import ApiError
from gateway.intake import (
    MAX_IP_CHARS,
    MAX_MODEL_CHARS,
    ExplainQuery,
    bearer_token,
    parse_data_class_header,
    parse_explain_body,
    parse_inference_body,
    parse_subject_country,
    single_header,
)


def _scope(*headers: tuple[bytes, bytes]) -> dict[str, object]:
    return {"type": "http", "headers": list(headers)}


def _rejected(call: object, *args: object) -> ApiError:
    assert callable(call)
    with pytest.raises(ApiError) as caught:
        call(*args)
    return caught.value


# -- X-Data-Subject-Country -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("DE", "DE"),
        ("de", "DE"),
        ("In", "IN"),
        (" us\t", "US"),  # optional whitespace around a header value is HTTP's own
        ("XK", "XK"),
    ],
)
def test_subject_country_accepts_ascii_codes(raw: str, expected: str) -> None:
    assert parse_subject_country(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "\xdf",  # latin-1 byte 0xDF, 'ß': upper-cases to 'SS' (South Sudan)
        "ss\u0085",  # NEL: str.strip() would strip it
        "\u0085SS",
        "S\u017f",  # LATIN SMALL LETTER LONG S upper-cases to 'S'
        "\uff24\uff25",  # fullwidth 'DE'
        "DE\n",
        "DE\x0b",
        "DE\x1f",
        "D E",
        "DEU",
        "XX",
        "",
        "Germany",
    ],
)
def test_subject_country_rejects_anything_but_two_ascii_letters(raw: str) -> None:
    error = _rejected(parse_subject_country, raw)
    assert error.status == 400
    assert error.code == "invalid_subject_country"
    assert error.param == "X-Data-Subject-Country"


def test_subject_country_error_echoes_a_long_value_cut_short() -> None:
    error = _rejected(parse_subject_country, "A" * 10_000)
    assert len(error.message) < 300
    assert "10000 characters" in error.message


# -- X-Data-Class ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (None, DataClass.PERSONAL),
        ("public", DataClass.PUBLIC),
        ("PAYMENT", DataClass.PAYMENT),
        (" Health\t", DataClass.HEALTH),
        ("financial_securities", DataClass.FINANCIAL_SECURITIES),
    ],
)
def test_data_class_accepts_ascii_names(raw: str | None, expected: DataClass) -> None:
    assert parse_data_class_header(raw) is expected


@pytest.mark.parametrize(
    "raw",
    [
        "public\u0085",  # str.strip() strips NEL
        "public\x1c",  # ... and the ASCII separators 0x1C-0x1F
        "public\x0c",
        "public\n",
        "\u0130nsurance",  # 'İ'.lower() is 'i' plus a combining dot
        "pub\u212alic",  # KELVIN SIGN lower-cases to 'k'
        "public,payment",
        "",
        "nope",
    ],
)
def test_data_class_rejects_non_ascii_and_unknown_values(raw: str) -> None:
    error = _rejected(parse_data_class_header, raw)
    assert error.status == 400
    assert error.code == "invalid_data_class"
    assert error.param == "X-Data-Class"
    assert "personal" in error.message  # lists the valid classes


# -- repeated headers ----------------------------------------------------------------------


def test_single_header_reads_one_value() -> None:
    scope = _scope((b"x-data-class", b"public"), (b"accept", b"*/*"))
    assert single_header(scope, b"x-data-class", "X-Data-Class") == "public"
    assert single_header(scope, b"x-data-subject-country", "X-Data-Subject-Country") is None


def test_single_header_refuses_a_repeat() -> None:
    scope = _scope((b"x-data-class", b"public"), (b"x-data-class", b"payment"))
    error = _rejected(single_header, scope, b"x-data-class", "X-Data-Class")
    assert (error.status, error.code, error.param) == (400, "repeated_header", "X-Data-Class")
    assert "2 times" in error.message


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ([(b"authorization", b"Bearer rg-key")], "rg-key"),
        ([(b"authorization", b"bearer  rg-key ")], "rg-key"),
        ([(b"authorization", b"Basic abc")], None),
        ([], None),
    ],
)
def test_bearer_token(headers: list[tuple[bytes, bytes]], expected: str | None) -> None:
    assert bearer_token(_scope(*headers)) == expected


def test_repeated_authorization_is_400() -> None:
    scope = _scope((b"authorization", b"Bearer a"), (b"authorization", b"Bearer b"))
    error = _rejected(bearer_token, scope)
    assert (error.status, error.code, error.param) == (400, "repeated_header", "Authorization")


# -- bodies -----------------------------------------------------------------------------------


def _body(**fields: object) -> bytes:
    return orjson.dumps(fields)


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (_body(model="m" * (MAX_MODEL_CHARS + 1)), "model_too_long", "model"),
        (_body(model="m" * (1 << 20)), "model_too_long", "model"),
        (_body(model=""), "invalid_model", "model"),
        (_body(model=["gpt"]), "invalid_model", "model"),
        (_body(messages=[]), "missing_model", "model"),
        (b"[]", "invalid_json", None),
        (b"", "invalid_json", None),
    ],
)
def test_inference_body_rejects(body: bytes, code: str, param: str | None) -> None:
    error = _rejected(parse_inference_body, body)
    assert (error.status, error.code, error.param) == (400, code, param)
    assert len(error.message) < 300


def test_inference_body_accepts_the_longest_model_name() -> None:
    parsed = parse_inference_body(_body(model="m" * MAX_MODEL_CHARS, stream=True))
    assert parsed.model == "m" * MAX_MODEL_CHARS
    assert parsed.stream is True


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (b"", ExplainQuery()),
        (b"null", ExplainQuery()),
        (b"{}", ExplainQuery()),
        (_body(ip="80.128.0.1"), ExplainQuery("80.128.0.1", None)),
        (_body(ip="2001:DB8:0::1", model="gpt-4o"), ExplainQuery("2001:db8::1", "gpt-4o")),
        (_body(ip=None, model="m" * MAX_MODEL_CHARS), ExplainQuery(None, "m" * MAX_MODEL_CHARS)),
    ],
)
def test_explain_body_accepts(body: bytes, expected: ExplainQuery) -> None:
    assert parse_explain_body(body) == expected


@pytest.mark.parametrize(
    ("body", "code", "param"),
    [
        (_body(model="m" * (MAX_MODEL_CHARS + 1)), "model_too_long", "model"),
        (_body(ip="8.8.8.8", model="m" * (20 << 20)), "model_too_long", "model"),
        (_body(ip="1" * (MAX_IP_CHARS + 1)), "ip_too_long", "ip"),
        (_body(ip="not-an-ip"), "invalid_ip", "ip"),
        (_body(ip="\uff11.2.3.4"), "invalid_ip", "ip"),
        (_body(ip=42), "invalid_ip", "ip"),
        (_body(address="1.2.3.4"), "unknown_field", "address"),
        (_body(**{"k" * 100_000: 1}), "unknown_field", "k" * 64),
        (b'{"ip": ', "invalid_json", None),
        (b"[1]", "invalid_json", None),
    ],
)
def test_explain_body_rejects(body: bytes, code: str, param: str | None) -> None:
    error = _rejected(parse_explain_body, body)
    assert (error.status, error.code, error.param) == (400, code, param)
    assert len(error.message) < 300
