"""What every Kubernetes adapter shares: the error types and a client built on first use.

The adapters raise only :class:`KubernetesError` and its subclasses, so a charm turns any of them
into a status with one ``except``: :class:`ForbiddenError` (a 403: the application is not
trusted), :class:`CRDMissingError` (Istio's ``AuthorizationPolicy`` kind is not served) and
:class:`KubernetesError` (anything else). lightkube is imported only when a client is built or
an error translated.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Generator
from typing import TYPE_CHECKING

from coordinated_mesh.charm.hints import trust_hint

if TYPE_CHECKING:
    from lightkube import Client

__all__ = [
    "MANAGED_BY",
    "AppClient",
    "CRDMissingError",
    "ClientFactory",
    "ForbiddenError",
    "KubernetesError",
    "api_errors",
    "make_client",
    "translate_api_error",
]

MANAGED_BY = "coordinated-mesh"
"""The ``app.kubernetes.io/managed-by`` value on every object this library writes."""


class KubernetesError(Exception):
    """The Kubernetes API refused or failed a request; the message says what and why."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status
        """The HTTP status code of the answer, ``None`` when there was no answer."""


class ForbiddenError(KubernetesError):
    """The API server answered 403: the application is not trusted with cluster access."""


class CRDMissingError(KubernetesError):
    """A custom resource kind is not served by the API server (its CRD is not installed)."""


def translate_api_error(
    error: Exception, *, app_name: str, missing_kind: str | None = None
) -> KubernetesError:
    """Turn an error raised by lightkube (or its HTTP client) into a :class:`KubernetesError`.

    Args:
        error: what lightkube raised: an ``ApiError`` (the server answered with a Status), an
            ``HTTPStatusError`` (a non-JSON error answer) or a transport error (no answer).
        app_name: the Juju application making the request, named in the 403 hint.
        missing_kind: the custom resource kind the request was about, if any (for example
            ``"AuthorizationPolicy"``). A 404 about the kind itself (no object named in the
            answer) then becomes a :class:`CRDMissingError`.

    Returns:
        The translated error, for the caller to ``raise ... from error``.
    """
    code, message, names_an_object = _describe(error)
    if code is None:
        return KubernetesError(f"cannot reach the Kubernetes API: {message}")
    if code == 403:
        return ForbiddenError(
            f"Kubernetes API access denied for {app_name} ({message}): "
            f"run `{trust_hint(app_name)}`",
            status=403,
        )
    if code == 404 and missing_kind is not None and not names_an_object:
        return CRDMissingError(
            f"the Kubernetes API does not serve {missing_kind} ({message}): "
            "is Istio installed in this cluster?",
            status=404,
        )
    return KubernetesError(f"Kubernetes API error {code}: {message}", status=code)


def _describe(error: Exception) -> tuple[int | None, str, bool]:
    """``(HTTP status or None, message, whether the answer names one object)`` of an error."""
    from lightkube import ApiError

    response = getattr(error, "response", None)
    response_code = getattr(response, "status_code", None)
    if isinstance(error, ApiError):
        status = error.status
        details = status.details
        names_an_object = details is not None and bool(details.name)
        return status.code or response_code, status.message or str(error), names_an_object
    if isinstance(response_code, int):
        # For example an unknown API group, answered with a plain-text "404 page not found".
        return response_code, str(error) or "no details", False
    return None, f"{type(error).__name__}: {error}", False


def _http_error_type() -> type[Exception]:
    """The base error class of the HTTP client lightkube uses (``httpx`` or ``httpx2``)."""
    from lightkube import ApiError

    for cls in ApiError.__mro__:
        if cls.__name__ == "HTTPError" and issubclass(cls, Exception):
            return cls
    return ApiError


@contextlib.contextmanager
def api_errors(*, app_name: str, missing_kind: str | None = None) -> Generator[None, None, None]:
    """Raise the Kubernetes API and transport errors of the block as :class:`KubernetesError`.

    Other exceptions (programming errors) pass through unchanged. Arguments are those of
    :func:`translate_api_error`.
    """
    try:
        yield
    except _http_error_type() as error:
        raise translate_api_error(error, app_name=app_name, missing_kind=missing_kind) from error


def make_client(*, field_manager: str, namespace: str | None = None) -> Client:
    """A lightkube client for the in-cluster (or ``KUBECONFIG``) API server.

    Args:
        field_manager: the name recorded as manager of the fields this client writes
            (by convention ``<app>-<model>``).
        namespace: the default namespace; the configuration's namespace when ``None``.
    """
    from lightkube import Client

    return Client(field_manager=field_manager, namespace=namespace)


ClientFactory = Callable[..., "Client"]
"""Builds a lightkube client; called as ``factory(field_manager=..., namespace=...)``."""


class AppClient:
    """The lightkube client an application's adapters share, built on first use.

    Units that never touch Kubernetes (non-leaders, hooks with nothing to do) never build a client,
    and so never import lightkube's models. The field manager is ``<app>-<namespace>``.

    Args:
        app_name: the application the client acts for.
        namespace: its namespace (the Juju model).
        factory: builds the client; :func:`make_client` (looked up when first used) if ``None``.
    """

    def __init__(self, *, app_name: str, namespace: str, factory: ClientFactory | None = None):
        self.app_name = app_name
        self.namespace = namespace
        self._factory = factory
        self._client: Client | None = None

    def get(self) -> Client:
        """The client, built on the first call.

        Raises:
            KubernetesError: no client can be built (no in-cluster credentials or ``KUBECONFIG``).
        """
        if self._client is None:
            factory = self._factory or make_client
            try:
                self._client = factory(
                    field_manager=f"{self.app_name}-{self.namespace}", namespace=self.namespace
                )
            except Exception as e:  # lightkube's ConfigError and friends: no usable credentials
                raise KubernetesError(f"no Kubernetes client: {type(e).__name__}: {e}") from e
        return self._client
