"""Reaching the Prefect server that pools and deployments are registered with.

Pools, deployments and workers only make sense against a long-lived server: with no API URL,
Prefect's client would quietly start a throwaway local one, and the pools would vanish with it.
So the URL is required, and the two ways a server can be unusable (down, or refusing the
credentials) are told apart in one line each. The basic-auth string comes from Prefect's own
setting (PREFECT_API_AUTH_STRING) and is never printed.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.settings import PREFECT_API_URL, get_current_settings, temporary_settings


class ServerError(ValueError):
    """The Prefect server is not configured, not reachable, or refuses the request."""


def resolve_api_url(explicit: str | None = None) -> str:
    """The API URL to use: the one given, else Prefect's setting (environment or profile)."""
    url = explicit or get_current_settings().api.url
    if not url:
        raise ServerError(
            "no Prefect server: set PREFECT_API_URL (e.g. http://127.0.0.1:4200/api, as `ftrl ui` "
            "prints) or give --api-url"
        )
    if not url.startswith(("http://", "https://")):
        raise ServerError(f"Prefect API URL {url!r} must start with http:// or https://")
    return url.rstrip("/")


@contextmanager
def connect(api_url: str) -> Iterator[SyncPrefectClient]:
    """A client for the server at `api_url`, checked to answer before it is handed out."""
    with temporary_settings(updates={PREFECT_API_URL: api_url}), get_client(sync_client=True) as client:
        problem = client.api_healthcheck()
        if problem is not None:
            raise ServerError(f"cannot reach the Prefect server at {api_url}: {problem}")
        try:
            yield client
        except httpx.HTTPStatusError as exc:
            if exc.response.status_code == 401:
                raise ServerError(
                    f"the Prefect server at {api_url} refused the credentials: set PREFECT_API_AUTH_STRING "
                    "to the USER:PASSWORD the server was started with"
                ) from None
            raise
