"""The dashboard at `/` on `$PORT`: the live picture in a browser, and who may see it.

Jobs carry patients' documents, so the page and its data (`/api/live`) are served
only with the configured access token (`http.token`: an `Authorization: Bearer`
header, or `?token=` on the page's address), or, when no token is configured, only
to 127.0.0.1 and never to a request a reverse proxy forwarded. `/healthz` and
`/metrics` are not served from here and name no document.

The page is one self-contained file shipped with the package (no CDN, no external
service): it polls `/api/live` every second and draws with SVG.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from importlib import resources
from typing import Any, Callable, Mapping
from urllib.parse import parse_qs, urlsplit

PAGE = "/"
API = "/api/live"


def is_loopback(address: str) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def presented_token(raw_path: str, headers: Mapping[str, str]) -> str | None:
    auth = next((v for k, v in headers.items() if k.lower() == "authorization"), "")
    if auth.lower().startswith("bearer "):
        return auth[7:].strip()
    values = parse_qs(urlsplit(raw_path).query).get("token")
    return values[0] if values else None


# Headers a reverse proxy adds: a request that carries one came from elsewhere through a
# proxy on this host, so its loopback address says nothing about who is asking.
PROXY_HEADERS = frozenset({"forwarded", "x-forwarded-for", "x-real-ip", "x-forwarded-host"})


def proxied(headers: Mapping[str, str]) -> bool:
    return any(k.lower() in PROXY_HEADERS for k in headers)


def access(client: str, configured: str, presented: str | None, via_proxy: bool = False) -> tuple[int, str]:
    """(200, "") when this request may see the dashboard, else (status, why)."""
    if configured:
        if presented is not None and hmac.compare_digest(presented.encode(), configured.encode()):
            return 200, ""
        return 401, "the dashboard needs its access token (http.token): open /?token=…"
    if via_proxy:
        return 403, ("the dashboard answers 127.0.0.1 only, and this request came through a proxy; set http.token "
                     "(DOCSUPER_HTTP_TOKEN) to open it to others")
    if is_loopback(client):
        return 200, ""
    return 403, "the dashboard answers 127.0.0.1 only; set http.token (DOCSUPER_HTTP_TOKEN) to open it to others"


def page_html() -> bytes:
    return resources.files("docsuper.supervisor").joinpath("static/dashboard.html").read_bytes()


class Dashboard:
    def __init__(self, picture: Callable[[], dict[str, Any]], token: str) -> None:
        self.picture = picture
        self.token = token

    def serves(self, path: str) -> bool:
        return path in (PAGE, API)

    def answer(self, raw_path: str, client: str, headers: Mapping[str, str]) -> tuple[int, str, bytes]:
        path = urlsplit(raw_path).path
        code, why = access(client, self.token, presented_token(raw_path, headers), proxied(headers))
        if code != 200:
            if path == API:
                return code, "application/json", json.dumps({"error": why}).encode()
            return code, "text/plain; charset=utf-8", f"docsuper: {why}\n".encode()
        if path == API:
            return 200, "application/json", json.dumps(self.picture(), default=str).encode()
        return 200, "text/html; charset=utf-8", page_html()
