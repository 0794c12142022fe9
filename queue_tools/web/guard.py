"""The dashboard's checks on every request, for a shared machine (docs/web.md, "Safety").

In this order: the ``Host`` header must name the address the server is bound to (or, bound to
loopback, ``localhost``), so a page whose DNS name was rebound to 127.0.0.1 cannot drive it;
the access token must come with the request (the ``execsvc_web_<port>`` cookie, HttpOnly and
SameSite=Strict, set when the printed URL's ``?token=`` is opened, or an ``Authorization: Bearer``
header for scripts), else 401; a request that changes anything is a POST, and a POST must come
from the page itself (``Origin`` is this server's, or ``Sec-Fetch-Site: same-origin``; a
bearer-token request from a script has neither) and is refused with ``--read-only``. There are
no CORS headers, so no other origin can read an answer. Every answer carries a
Content-Security-Policy that allows scripts, styles and connections from this server only (no
inline script), and ``X-Content-Type-Options: nosniff``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode

from starlette.datastructures import Headers
from starlette.responses import PlainTextResponse, RedirectResponse, Response
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)
"""The Content-Security-Policy of every answer."""
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "[::1]", "::1")
SAFE_METHODS = ("GET", "HEAD")


@dataclass(frozen=True)
class Access:
    """Who may use the server: the token, the names ``Host`` may carry, and whether it is read-only."""

    token: str
    host: str
    port: int
    read_only: bool = False

    @property
    def cookie_name(self) -> str:
        """One cookie per port: browsers share cookies between ports of one host."""
        return f"execsvc_web_{self.port}"

    def hosts(self) -> frozenset[str]:
        """The ``Host`` values accepted: the bound host with the port (a loopback bind: any loopback name)."""
        names = {self.host, *LOOPBACK_NAMES} if self.host in LOOPBACK_NAMES else {self.host}
        bracketed = {f"[{name}]" if ":" in name and not name.startswith("[") else name for name in names}
        return frozenset(f"{name.lower()}:{self.port}" for name in bracketed)

    def origins(self) -> frozenset[str]:
        """The ``Origin`` values a POST may carry: this server's own."""
        return frozenset(f"http://{host}" for host in self.hosts())

    def token_matches(self, given: str | None) -> bool:
        return given is not None and hmac.compare_digest(given.encode(), self.token.encode())


def _refuse(status: int, text: str) -> Response:
    return PlainTextResponse(f"{status}: {text}\n", status_code=status)


class Guard:
    """ASGI middleware applying :class:`Access` to every HTTP request (see the module's docstring)."""

    def __init__(self, app: ASGIApp, access: Access) -> None:
        self.app = app
        self.access = access

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        refusal = self.check(scope)
        if refusal is not None:
            await _with_headers(refusal)(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                headers += [(name.encode(), value.encode()) for name, value in _SECURITY_HEADERS]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)

    def check(self, scope: Scope) -> Response | None:
        """The answer that refuses this request, or ``None`` to let it through."""
        access = self.access
        headers = Headers(scope=scope)
        if headers.get("host", "").lower() not in access.hosts():
            return _refuse(421, "this server answers only to the address it was started on")
        query = dict(parse_qsl(scope.get("query_string", b"").decode("latin-1")))
        cookies = _cookies(headers.get("cookie", ""))
        bearer = headers.get("authorization", "")
        by_bearer = bearer.startswith("Bearer ") and access.token_matches(bearer[7:])
        if scope["method"] in SAFE_METHODS and "token" in query:
            if not access.token_matches(query["token"]):
                return _refuse(401, "the token in this URL is not this server's; use the URL execsvc web printed")
            rest = urlencode([(key, value) for key, value in query.items() if key != "token"])
            response = RedirectResponse(scope["path"] + (f"?{rest}" if rest else ""), status_code=303)
            response.set_cookie(access.cookie_name, access.token, httponly=True, samesite="strict", path="/")
            return response
        if not by_bearer and not access.token_matches(cookies.get(access.cookie_name)):
            return _refuse(401, "no access token: open the URL execsvc web printed (it carries the token)")
        if scope["method"] in SAFE_METHODS:
            return None
        if scope["method"] != "POST":
            return _refuse(405, "only GET and POST are answered")
        same_origin = headers.get("origin") in access.origins() or (
            "origin" not in headers and headers.get("sec-fetch-site") == "same-origin"
        )
        from_script = by_bearer and "origin" not in headers and "sec-fetch-site" not in headers
        if not (same_origin or from_script):
            return _refuse(403, "a request that changes the queue must come from this server's own page")
        if access.read_only:
            return _refuse(403, "this server is read-only (execsvc web --read-only): nothing can be changed")
        return None


_SECURITY_HEADERS = (
    ("content-security-policy", CSP),
    ("x-content-type-options", "nosniff"),
    ("referrer-policy", "no-referrer"),
    ("x-frame-options", "DENY"),
)


def _with_headers(response: Response) -> Response:
    for name, value in _SECURITY_HEADERS:
        response.headers[name] = value
    return response


def _cookies(header: str) -> dict[str, str]:
    found: dict[str, str] = {}
    for part in header.split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            found.setdefault(name, value)
    return found
