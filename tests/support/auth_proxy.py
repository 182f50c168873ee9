"""A basic-auth reverse proxy in front of a real service (what an ingress with auth does).

Requests without the right `Authorization: Basic` header get 401; the rest are forwarded as
they came. Every request's path and whether it carried the credentials is recorded.
"""

from __future__ import annotations

import base64
import http.server
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from pulsar_cli.demo_stack import free_port
from tests.support.services import serving_in_thread

_HOP = {"connection", "keep-alive", "transfer-encoding", "host", "authorization",
        "content-length"}


@dataclass
class AuthProxy:
    url: str  # without credentials
    user: str
    password: str
    seen: list[tuple[str, bool]] = field(default_factory=list)  # (path, authorised)

    def with_credentials(self) -> str:
        scheme, rest = self.url.split("://", 1)
        return f"{scheme}://{self.user}:{self.password}@{rest}"


def _handler(proxy: AuthProxy, upstream: str) -> type[http.server.BaseHTTPRequestHandler]:
    expected = "Basic " + base64.b64encode(f"{proxy.user}:{proxy.password}".encode()).decode()

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _forward(self) -> None:
            authorised = self.headers.get("Authorization") == expected
            proxy.seen.append((self.path, authorised))
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else None
            if not authorised:
                self._answer(401, {"WWW-Authenticate": "Basic"}, b"unauthorised")
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
            request = urllib.request.Request(upstream + self.path, data=body, headers=headers,
                                             method=self.command)
            try:
                with urllib.request.urlopen(request, timeout=60) as answer:
                    self._answer(answer.status, dict(answer.headers.items()), answer.read())
            except urllib.error.HTTPError as error:
                self._answer(error.code, dict(error.headers.items()), error.read())
            except OSError:
                self._answer(502, {}, b"upstream unreachable")

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for key, value in headers.items():
                if key.lower() not in _HOP:
                    self.send_header(key, value)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, format: str, *args: object) -> None:  # quiet
            return

    return Handler


@contextmanager
def auth_proxy(upstream: str, user: str = "pulsar", password: str = "pa55-w0rd-SECRET"
               ) -> Iterator[AuthProxy]:
    port = free_port()
    proxy = AuthProxy(f"http://127.0.0.1:{port}", user, password)
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), _handler(proxy, upstream))
    with serving_in_thread(server):
        yield proxy
