"""Error translation and label-value shortening shared by the Kubernetes adapters."""

from __future__ import annotations

from typing import Any

import pytest
from coordinated_mesh.k8s.client import (
    AppClient,
    CRDMissingError,
    ForbiddenError,
    KubernetesError,
    api_errors,
    translate_api_error,
)
from coordinated_mesh.parse import LABEL_VALUE_RE, is_valid_label_value, safe_label_value
from hypothesis import assume, given
from hypothesis import strategies as st
from lightkube import ApiError
from lightkube.config import client_adapter

httpx: Any = client_adapter.httpx  # pyright: ignore[reportPrivateImportUsage]
URL = "https://k8s/apis/security.istio.io/v1/namespaces/m/authorizationpolicies"


def api_error(code: int, message: str, details: dict[str, Any] | None = None) -> ApiError:
    status = {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "code": code,
        **({"details": details} if details is not None else {}),
    }
    request = httpx.Request("GET", URL)
    return ApiError(request=request, response=httpx.Response(code, json=status, request=request))


def plain_error(code: int) -> Exception:
    request = httpx.Request("GET", URL)
    response = httpx.Response(code, text="404 page not found", request=request)
    return httpx.HTTPStatusError("404 page not found", request=request, response=response)


def test_403_is_forbidden_and_says_how_to_trust():
    error = translate_api_error(
        api_error(403, 'configmaps is forbidden: User "x" cannot list'), app_name="coord"
    )
    assert isinstance(error, ForbiddenError)
    assert "juju trust coord --scope=cluster" in str(error)
    assert error.status == 403


def test_404_for_the_kind_itself_is_crd_missing():
    unknown_kind = api_error(404, "the server could not find the requested resource", {})
    error = translate_api_error(unknown_kind, app_name="c", missing_kind="AuthorizationPolicy")
    assert isinstance(error, CRDMissingError)
    assert "AuthorizationPolicy" in str(error) and "Istio" in str(error)
    unknown_group = translate_api_error(plain_error(404), app_name="c", missing_kind="X")
    assert isinstance(unknown_group, CRDMissingError)


def test_404_for_one_object_is_not_crd_missing():
    missing_object = api_error(
        404, 'authorizationpolicies "p" not found', {"name": "p", "kind": "authorizationpolicies"}
    )
    error = translate_api_error(missing_object, app_name="c", missing_kind="AuthorizationPolicy")
    assert type(error) is KubernetesError
    assert error.status == 404
    assert type(translate_api_error(plain_error(404), app_name="c")) is KubernetesError


def test_other_answers_and_no_answer():
    conflict = translate_api_error(api_error(409, "already exists"), app_name="c")
    assert type(conflict) is KubernetesError
    assert conflict.status == 409
    assert "already exists" in str(conflict)
    unreachable = translate_api_error(
        httpx.ConnectError("refused", request=httpx.Request("GET", URL)), app_name="c"
    )
    assert type(unreachable) is KubernetesError
    assert unreachable.status is None
    assert "cannot reach" in str(unreachable)


def test_api_errors_translates_http_errors_only():
    with pytest.raises(ForbiddenError) as caught, api_errors(app_name="coord"):
        raise api_error(403, "forbidden")
    assert isinstance(caught.value.__cause__, ApiError)
    with pytest.raises(ValueError, match="a bug"), api_errors(app_name="coord"):
        raise ValueError("a bug")


@given(st.text(max_size=200))
def test_safe_label_value_is_always_a_valid_label_value(value: str):
    safe = safe_label_value(value)
    assert LABEL_VALUE_RE.match(safe), safe
    assert safe_label_value(value) == safe


@given(st.from_regex(r"^[a-z0-9]([a-z0-9.-]{0,61}[a-z0-9])?$", fullmatch=True))
def test_valid_values_are_unchanged(value: str):
    assert safe_label_value(value) == value


@given(st.text(min_size=64, max_size=120), st.text(min_size=64, max_size=120))
def test_long_values_stay_distinct(one: str, other: str):
    assume(one != other)
    assert safe_label_value(one) != safe_label_value(other)


def test_long_value_keeps_a_readable_head():
    value = "coordinator-" + "x" * 80
    safe = safe_label_value(value)
    assert len(safe) == 63
    assert safe.startswith("coordinator-xxx")


def test_a_label_value_with_a_trailing_newline_is_not_valid():
    assert not is_valid_label_value("ambient\n")
    safe = safe_label_value("ambient\n")
    assert "\n" not in safe
    assert is_valid_label_value(safe)


def test_app_client_is_built_once_on_first_use_with_the_app_field_manager():
    calls: list[dict[str, str]] = []

    def factory(**kwargs: str) -> Any:
        calls.append(kwargs)
        return object()

    client = AppClient(app_name="coord", namespace="m", factory=factory)
    assert calls == []
    first = client.get()
    assert client.get() is first
    assert calls == [{"field_manager": "coord-m", "namespace": "m"}]


def test_app_client_turns_a_failing_factory_into_a_kubernetes_error():
    def factory(**_: str) -> Any:
        raise RuntimeError("no KUBECONFIG")

    with pytest.raises(KubernetesError, match="no Kubernetes client: RuntimeError: no KUBECONFIG"):
        AppClient(app_name="coord", namespace="m", factory=factory).get()
