"""HTTP transport: the one choke point through which every request to the server goes.

It owns timeouts, redirects, authentication, retries of idempotent requests, the cap on
answer sizes, request counting, and the single mapping from HTTP status to exception.
It knows nothing of paths, names or caching. This is the only module that imports requests.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import ipaddress
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from urllib.parse import urljoin, urlsplit

import requests
import requests.adapters
import requests.auth

from caldavfs import __version__
from caldavfs.davxml import parse_error_precondition
from caldavfs.errors import (
    ConflictError,
    DavError,
    ForbiddenError,
    InsufficientStorageError,
    InvalidResponseError,
    MethodNotAllowedError,
    NotFoundError,
    PreconditionFailedError,
    RejectedError,
    ServerError,
    TransportError,
    UnauthorizedError,
)

log = logging.getLogger(__name__)

IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT"})
_REDIRECTS = frozenset({301, 302, 303, 307, 308})
_MAX_REDIRECTS = 5
_RETRY_STATUSES = frozenset({500, 502, 503, 504})
# CalDAV preconditions (RFC 4791 5.3.2.1) that mean "this data is not acceptable".
_DATA_PRECONDITIONS = frozenset(
    {
        "valid-calendar-data",
        "supported-calendar-data",
        "valid-calendar-object-resource",
        "supported-calendar-component",
        "no-uid-conflict",
        "max-resource-size",
        "min-date-time",
        "max-date-time",
        "max-instances",
        "max-attendees-per-instance",
    }
)


@dataclass
class Response:
    status: int
    headers: Mapping[str, str]
    body: bytes
    url: str


@dataclass
class Stats:
    """Counters for the benchmark and ``caldavfs status``; shared by all threads."""

    requests: int = 0
    bytes_received: int = 0
    by_method: Counter[str] = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def count(self, method: str, nbytes: int) -> None:
        with self.lock:
            self.requests += 1
            self.bytes_received += nbytes
            self.by_method[method] += 1

    def snapshot(self) -> dict[str, object]:
        with self.lock:
            return {
                "requests": self.requests,
                "bytes_received": self.bytes_received,
                "by_method": dict(self.by_method),
            }


def on_this_machine(url: str) -> bool:
    """Whether ``url``'s host is a loopback address: by its name, without asking DNS."""
    return _loopback((urlsplit(url).hostname or "").lower())


@functools.lru_cache(maxsize=64)
def _loopback(host: str) -> bool:
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return (parts.scheme.lower(), (parts.hostname or "").lower(), port)


def error_for(status: int, url: str, body: bytes = b"", method: str = "") -> DavError:
    """The one place that turns an HTTP error status into an exception."""
    precondition = parse_error_precondition(body) if body else ""
    where = f"{method} {url}".strip()
    detail = f" ({precondition})" if precondition else ""
    message = f"{where}: HTTP {status}{detail}"
    kind: type[DavError]
    if status == 401:
        kind = UnauthorizedError
    elif status == 403:
        kind = RejectedError if precondition in _DATA_PRECONDITIONS else ForbiddenError
    elif status in (404, 410):
        kind = NotFoundError
    elif status == 405:
        kind = MethodNotAllowedError
    elif status == 409:
        kind = ConflictError
    elif status == 412:
        kind = PreconditionFailedError
    elif status in (400, 413, 415, 422):
        kind = RejectedError
    elif status == 507:
        kind = InsufficientStorageError
    elif status >= 500:
        kind = ServerError
    else:
        kind = DavError
    return kind(message, status=status, url=url, precondition=precondition)


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


class DavSession:
    """A pooled keep-alive HTTP session with caldavfs's rules for every request."""

    def __init__(
        self,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 30.0,
        verify: bool | str = True,
        max_body: int = 256 * 1024 * 1024,
        retries: int = 2,
        token_command: Callable[[], str] | None = None,
    ) -> None:
        self.timeout = timeout
        self.max_body = max_body
        self.retries = retries
        self.stats = Stats()
        self._username = username
        self._password = password
        self._token_command = token_command
        self._token: str | None = None
        self._verify = verify
        self._trusted: set[tuple[str, str, int]] = set()
        self._digest: requests.auth.HTTPDigestAuth | None = None
        self._reachable: bool | None = None
        self._state_lock = threading.Lock()
        self._session = requests.Session()
        self._session.trust_env = False  # no proxies or netrc from the environment behind our back
        # A small pool: DAViCal's Apache stalls ~5 s when many idle pooled connections pile up.
        adapter = requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4, max_retries=0)
        self._session.mount("http://", adapter)
        self._session.mount("https://", adapter)
        self._session.headers["User-Agent"] = f"caldavfs/{__version__}"

    def trust(self, url: str) -> None:
        """Allow credentials to be sent to ``url``'s origin (the user's URL, or a home-set
        the server itself named, as iCloud does with its pNN-caldav hosts)."""
        self._trusted.add(origin(url))

    def close(self) -> None:
        self._session.close()

    def _bearer(self) -> str:
        with self._state_lock:
            if self._token is None and self._token_command is not None:
                self._token = self._token_command()
            return self._token or ""

    # --- the choke point ----------------------------------------------------------------

    def request(
        self,
        method: str,
        url: str,
        *,
        body: bytes | None = None,
        headers: Mapping[str, str] | None = None,
        depth: str | None = None,
        ok: tuple[int, ...] = (200, 201, 204, 207),
    ) -> Response:
        """Send one request; follow redirects with method and body; retry idempotent ones.

        Raises a ``DavError`` subclass for any status outside ``ok``, ``TransportError``
        when the server can't be reached in ``timeout`` seconds, ``InvalidResponseError``
        for an answer larger than ``max_body``.
        """
        deadline = time.monotonic() + self.timeout
        send_headers = dict(headers or {})
        if depth is not None:
            send_headers["Depth"] = depth
        if body is not None and "Content-Type" not in send_headers:
            send_headers["Content-Type"] = 'application/xml; charset="utf-8"'
        attempt = 0
        while True:
            try:
                response = self._follow(method, url, body, send_headers, deadline)
            except TransportError:
                self._mark_reachable(False, url)
                if method not in IDEMPOTENT or not self._may_retry(attempt, deadline, None):
                    raise
                attempt += 1
                continue
            self._mark_reachable(True, url)
            if response.status in ok:
                return response
            if (
                method in IDEMPOTENT
                and response.status in _RETRY_STATUSES
                and self._may_retry(attempt, deadline, _retry_after(response.headers.get("Retry-After")))
            ):
                attempt += 1
                continue
            raise error_for(response.status, response.url, response.body, method)

    def _may_retry(self, attempt: int, deadline: float, wait: float | None) -> bool:
        if attempt >= self.retries:
            return False
        delay = wait if wait is not None else 0.25 * (2**attempt)
        if time.monotonic() + delay >= deadline:
            return False
        time.sleep(delay)
        return True

    def _mark_reachable(self, reachable: bool, url: str) -> None:
        with self._state_lock:
            # Nothing to say before the first answer: the mount's own check reports that.
            changed = self._reachable is not None and reachable != self._reachable
            self._reachable = reachable
        if changed and reachable:
            log.warning("server %s is reachable again", urlsplit(url).netloc)
        elif changed:
            log.warning("server %s is unreachable; serving what is cached", urlsplit(url).netloc)

    @property
    def reachable(self) -> bool:
        return self._reachable is not False

    def _follow(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: float
    ) -> Response:
        # requests turns PROPFIND into GET on a 302 and drops the body on a 301 (Xandikos, Cyrus
        # and SOGo redirect /.well-known/caldav), so redirects are followed here with both kept.
        for _ in range(_MAX_REDIRECTS + 1):
            response = self._send(method, url, body, headers, deadline)
            location = response.headers.get("Location")
            if response.status not in _REDIRECTS or not location:
                return response
            new_url = urljoin(url, location)
            log.debug("%s %s redirected to %s", method, url, new_url)
            url = new_url
        raise InvalidResponseError(f"{method} {url}: more than {_MAX_REDIRECTS} redirects")

    def _auth_for(self, url: str) -> tuple[dict[str, str], requests.auth.AuthBase | None]:
        if origin(url) not in self._trusted:
            return {}, None
        if self._token_command is not None:
            return {"Authorization": f"Bearer {self._bearer()}"}, None
        if self._username is None:
            return {}, None
        if self._digest is not None:
            return {}, self._digest
        # Basic goes with the first request: Radicale delays every 401 by up to 1.5 s and Cyrus
        # answers an anonymous PROPFIND with 207 instead of a challenge.
        raw = f"{self._username}:{self._password or ''}".encode()
        return {"Authorization": "Basic " + base64.b64encode(raw).decode("ascii")}, None

    def _send(
        self, method: str, url: str, body: bytes | None, headers: dict[str, str], deadline: float
    ) -> Response:
        extra, auth = self._auth_for(url)
        response = self._send_once(method, url, body, {**headers, **extra}, auth, deadline)
        if response.status == 401 and self._token_command is not None and extra:
            # OAuth tokens expire (Google): ask the command for a fresh one, once.
            log.info("bearer token refused; running the token command again")
            self._token = None
            extra, auth = self._auth_for(url)
            return self._send_once(method, url, body, {**headers, **extra}, auth, deadline)
        challenge = response.headers.get("WWW-Authenticate", "")
        if (
            response.status == 401
            and extra
            and challenge.lower().startswith("digest")
            and self._digest is None
        ):
            log.debug("server asks for Digest authentication")
            self._digest = requests.auth.HTTPDigestAuth(self._username or "", self._password or "")
            response = self._send_once(method, url, body, headers, self._digest, deadline)
        return response

    def _send_once(
        self,
        method: str,
        url: str,
        body: bytes | None,
        headers: dict[str, str],
        auth: requests.auth.AuthBase | None,
        deadline: float,
    ) -> Response:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TransportError(f"{method} {url}: no answer within {self.timeout:g} s")
        started = time.monotonic()
        chunks: list[bytes] = []
        cut = threading.Event()
        if on_this_machine(url):
            # Compressing costs a server on this machine more than it saves: Radicale spends a
            # fifth of a calendar-query's time on gzip, for bytes that never cross a network.
            headers = {**headers, "Accept-Encoding": "identity"}
        try:
            with self._session.request(
                method,
                url,
                data=body,
                headers=headers,
                auth=auth,
                timeout=(min(remaining, 10.0), remaining),
                allow_redirects=False,
                stream=True,
                verify=self._verify,
            ) as resp:
                # A server that trickles its answer keeps every single read under the socket
                # timeout: at the deadline a watchdog cuts the connection instead.
                watchdog = threading.Timer(max(0.0, deadline - time.monotonic()), _cut, args=(resp, cut))
                watchdog.daemon = True
                watchdog.start()
                try:
                    total = 0
                    for chunk in resp.iter_content(65536):
                        total += len(chunk)
                        if total > self.max_body:
                            raise InvalidResponseError(
                                f"{method} {url}: answer larger than {self.max_body} bytes, refused"
                            )
                        if time.monotonic() > deadline:
                            raise TransportError(f"{method} {url}: no complete answer within {self.timeout:g} s")
                        chunks.append(chunk)
                finally:
                    watchdog.cancel()
                if cut.is_set():  # what came before the cut is never taken for the whole answer
                    raise TransportError(f"{method} {url}: no complete answer within {self.timeout:g} s")
                status, resp_headers, final_url = resp.status_code, resp.headers, resp.url
        except requests.exceptions.SSLError as exc:
            raise TransportError(
                f"{method} {url}: TLS certificate verification failed ({_reason(exc)}); "
                "give the server's CA with --ca-cert FILE"
            ) from exc
        except requests.exceptions.Timeout as exc:
            raise TransportError(f"{method} {url}: no answer within {self.timeout:g} s") from exc
        except requests.exceptions.RequestException as exc:
            if cut.is_set():
                raise TransportError(f"{method} {url}: no complete answer within {self.timeout:g} s") from exc
            raise TransportError(f"{method} {url}: {_reason(exc)}") from exc
        data = b"".join(chunks)
        self.stats.count(method, len(data))
        log.debug(
            "%s %s -> %d in %.3f s, %d bytes", method, url, status, time.monotonic() - started, len(data)
        )
        return Response(status=status, headers=resp_headers, body=data, url=final_url or url)


def _cut(resp: requests.Response, cut: threading.Event) -> None:
    """Shut the answer's connection down, so that a read blocked on it returns now."""
    cut.set()
    connection = getattr(resp.raw, "connection", None)  # urllib3's, None once released
    sock = getattr(connection, "sock", None)
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)


def _reason(exc: BaseException) -> str:
    """A short cause for a requests exception, without the noise of nested reprs."""
    text = str(exc)
    for marker in ("Connection refused", "Name or service not known", "timed out", "reset by peer",
                   "certificate verify failed", "Connection aborted", "RemoteDisconnected"):
        if marker in text:
            return marker
    return text[:200]
