"""Every kind of bad input gets its own precise, OpenAI-shaped error and never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from tests.integration.conftest import DEMO_KEY, HTTP, IP_DE, GatewayProcess

pytestmark = pytest.mark.integration

MAX_BODY = 2048
AUTH = {"Authorization": f"Bearer {DEMO_KEY}", "X-Forwarded-For": IP_DE}
JSON_AUTH = {**AUTH, "Content-Type": "application/json"}
CHAT_BODY = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}


@pytest.fixture(scope="module")
def small_gateway(
    catalog: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[GatewayProcess]:
    """A gateway accepting request bodies of at most MAX_BODY bytes."""
    overrides = {"GATEWAY_MAX_BODY_BYTES": str(MAX_BODY)}
    with GatewayProcess(catalog, tmp_path_factory.mktemp("small-gw"), overrides) as running:
        yield running


def _error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """Check status, OpenAI error shape and absence of a traceback; return `error`."""
    assert response.status_code == status, response.text
    assert "Traceback" not in response.text
    assert 'File "' not in response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["type"], str)
    assert "param" in error
    assert "code" in error
    if code is not None:
        assert error["code"] == code, error
    return dict(error)


def _post(gw: GatewayProcess, content: bytes, headers: dict[str, str] | None = None) -> Any:
    return HTTP.post(
        f"{gw.base_url}/v1/chat/completions",
        content=content,
        headers=JSON_AUTH if headers is None else headers,
    )


@pytest.mark.parametrize(
    ("content", "code", "message", "param"),
    [
        pytest.param(b'{"model": ', "invalid_json", "not valid JSON", None, id="invalid-json"),
        pytest.param(b"", "invalid_json", "empty", None, id="empty-body"),
        pytest.param(b"[1, 2]", "invalid_json", "must be a JSON object", None, id="array"),
        pytest.param(b'"text"', "invalid_json", "must be a JSON object", None, id="string"),
        pytest.param(
            b'{"messages": []}', "missing_model", "missing required field 'model'", "model",
            id="missing-model",
        ),
        pytest.param(
            b'{"model": 42}', "invalid_model", "'model' must be a non-empty string", "model",
            id="model-not-string",
        ),
        pytest.param(
            b'{"model": ""}', "invalid_model", "'model' must be a non-empty string", "model",
            id="model-empty",
        ),
        pytest.param(
            b'{"model": "gpt-4o-mini", "stream": "yes"}',
            "invalid_stream",
            "'stream' must be true or false",
            "stream",
            id="stream-not-bool",
        ),
    ],
)  # fmt: skip
def test_bad_body_is_400(
    small_gateway: GatewayProcess, content: bytes, code: str, message: str, param: str | None
) -> None:
    error = _error(_post(small_gateway, content), 400, code)
    assert message in error["message"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param


def test_body_over_limit_with_content_length_is_413(small_gateway: GatewayProcess) -> None:
    body = orjson.dumps({**CHAT_BODY, "padding": "x" * (MAX_BODY * 2)})
    response = _post(small_gateway, body)
    error = _error(response, 413, "request_too_large")
    assert f"{MAX_BODY} bytes" in error["message"]


def test_body_over_limit_with_chunked_upload_is_413(small_gateway: GatewayProcess) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gpt-4o-mini", "padding": "'
        for _ in range(8):
            yield b"x" * 1024
        yield b'"}'

    response = HTTP.post(
        f"{small_gateway.base_url}/v1/chat/completions", content=chunks(), headers=JSON_AUTH
    )
    assert response.request.headers.get("transfer-encoding") == "chunked"
    assert "content-length" not in response.request.headers
    error = _error(response, 413, "request_too_large")
    assert f"{MAX_BODY} bytes" in error["message"]


def test_body_just_under_limit_is_accepted(small_gateway: GatewayProcess) -> None:
    body = orjson.dumps({**CHAT_BODY, "user": ""})
    body = orjson.dumps({**CHAT_BODY, "user": "u" * (MAX_BODY - len(body))})
    assert len(body) == MAX_BODY
    response = _post(small_gateway, body)
    assert response.status_code == 200, response.text
    assert response.headers["x-residency-region"] == "eu-frankfurt"


def test_unknown_data_class_is_400_naming_it(small_gateway: GatewayProcess) -> None:
    response = _post(small_gateway, orjson.dumps(CHAT_BODY), {**JSON_AUTH, "X-Data-Class": "nope"})
    error = _error(response, 400, "invalid_data_class")
    assert "'nope'" in error["message"]
    assert "personal" in error["message"]  # lists the valid classes
    assert error["param"] == "X-Data-Class"


@pytest.mark.parametrize("value", ["Germany", "XX", "D"])
def test_bad_subject_country_is_400_naming_it(small_gateway: GatewayProcess, value: str) -> None:
    headers = {**JSON_AUTH, "X-Data-Subject-Country": value}
    error = _error(_post(small_gateway, orjson.dumps(CHAT_BODY), headers), 400)
    assert error["code"] == "invalid_subject_country"
    assert repr(value) in error["message"]
    assert "ISO 3166-1 alpha-2" in error["message"]


def test_missing_api_key_is_401(small_gateway: GatewayProcess) -> None:
    headers = {"Content-Type": "application/json", "X-Forwarded-For": IP_DE}
    error = _error(_post(small_gateway, orjson.dumps(CHAT_BODY), headers), 401, "missing_api_key")
    assert "Authorization: Bearer" in error["message"]


@pytest.mark.parametrize(
    "authorization", ["Bearer rg-wrong-key", "Bearer", "Basic cmctZGVtby1rZXk=", DEMO_KEY]
)
def test_wrong_api_key_is_401(small_gateway: GatewayProcess, authorization: str) -> None:
    headers = {"Content-Type": "application/json", "Authorization": authorization}
    error = _error(_post(small_gateway, orjson.dumps(CHAT_BODY), headers), 401)
    assert error["code"] in {"invalid_api_key", "missing_api_key"}
    assert "rg-demo-key" not in error["message"]


def test_models_without_key_is_401(small_gateway: GatewayProcess) -> None:
    _error(HTTP.get(f"{small_gateway.base_url}/v1/models"), 401, "missing_api_key")


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE"])
def test_wrong_method_is_405(small_gateway: GatewayProcess, method: str) -> None:
    response = HTTP.request(method, f"{small_gateway.base_url}/v1/chat/completions", headers=AUTH)
    error = _error(response, 405, "method_not_allowed")
    assert "POST" in error["message"]


def test_unknown_model_is_404(small_gateway: GatewayProcess) -> None:
    body = orjson.dumps({**CHAT_BODY, "model": "gpt-9-ultra"})
    error = _error(_post(small_gateway, body), 404, "model_not_found")
    assert "gpt-9-ultra" in error["message"]


def test_explain_with_invalid_json_is_400(small_gateway: GatewayProcess) -> None:
    response = HTTP.post(
        f"{small_gateway.base_url}/v1/residency/explain",
        content=b'{"ip": ',
        headers=JSON_AUTH,
    )
    error = _error(response, 400)
    assert error["type"] == "invalid_request_error"
    assert "JSON" in error["message"]


def test_explain_with_unknown_field_is_400(small_gateway: GatewayProcess) -> None:
    response = HTTP.post(
        f"{small_gateway.base_url}/v1/residency/explain", json={"address": "1.2.3.4"}, headers=AUTH
    )
    error = _error(response, 400)
    assert "address" in error["message"]


def test_explain_with_invalid_ip_is_400(small_gateway: GatewayProcess) -> None:
    response = HTTP.post(
        f"{small_gateway.base_url}/v1/residency/explain", json={"ip": "not-an-ip"}, headers=AUTH
    )
    error = _error(response, 400)
    assert "not-an-ip" in error["message"]


def test_explain_with_bad_data_class_header_is_400(small_gateway: GatewayProcess) -> None:
    response = HTTP.post(
        f"{small_gateway.base_url}/v1/residency/explain",
        json={"ip": IP_DE},
        headers={**AUTH, "X-Data-Class": "nope"},
    )
    error = _error(response, 400, "invalid_data_class")
    assert "'nope'" in error["message"]


def test_gateway_logged_no_traceback(small_gateway: GatewayProcess) -> None:
    """Runs last in this module: none of the bad inputs above crashed a handler."""
    assert "Traceback" not in small_gateway.output()


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/v1/residency/explain", 405, id="explain-GET"),
        pytest.param("POST", "/v1/models", 405, id="models-POST"),
        pytest.param("GET", "/v1/no-such-endpoint", 404, id="unknown-path"),
        pytest.param("POST", "/v1/chat/completions/", 404, id="trailing-slash"),
    ],
)
def test_unknown_route_errors_are_openai_shaped(
    small_gateway: GatewayProcess, method: str, path: str, status: int
) -> None:
    response = HTTP.request(method, f"{small_gateway.base_url}{path}", headers=AUTH)
    _error(response, status)
