"""dav: status -> exception, redirects, credentials, retries, limits, timeouts, Digest, counting."""

from __future__ import annotations

import time

import pytest

from caldavfs import errors as E
from caldavfs.dav import DavSession, error_for, on_this_machine
from tests.httpstub import Reply, Request, Stub

MS = b'<?xml version="1.0"?><multistatus xmlns="DAV:"/>'
BODY = b'<?xml version="1.0"?><propfind xmlns="DAV:"><prop><resourcetype/></prop></propfind>'
VALID_DATA = (b'<D:error xmlns:D="DAV:" xmlns:C="urn:ietf:params:xml:ns:caldav">'
              b"<C:valid-calendar-data/></D:error>")


@pytest.mark.parametrize(("status", "body", "cls"), [
    (401, b"", E.UnauthorizedError),
    (403, b"", E.ForbiddenError),
    (403, b"<html>no</html>", E.ForbiddenError),
    (403, VALID_DATA, E.RejectedError),
    (404, b"", E.NotFoundError),
    (410, b"", E.NotFoundError),
    (405, b"", E.MethodNotAllowedError),
    (409, b"", E.ConflictError),
    (412, b"", E.PreconditionFailedError),
    (400, b"", E.RejectedError),
    (415, b"", E.RejectedError),
    (507, b"", E.InsufficientStorageError),
    (500, b"", E.ServerError),
    (503, b"", E.ServerError),
])
def test_error_for(status: int, body: bytes, cls: type[E.DavError]) -> None:
    exc = error_for(status, "http://h/x", body, "PUT")
    assert type(exc) is cls
    assert exc.status == status and exc.url == "http://h/x"
    assert str(status) in str(exc)


def test_error_for_keeps_precondition() -> None:
    exc = error_for(403, "http://h/x", VALID_DATA, "PUT")
    assert exc.precondition == "valid-calendar-data"
    assert "valid-calendar-data" in str(exc)


def _session(stub: Stub, **kw: object) -> DavSession:
    s = DavSession(username="alice", password="pw", **kw)  # type: ignore[arg-type]
    s.trust(stub.url)
    return s


@pytest.mark.parametrize("status", [301, 302, 307, 308])
def test_redirect_resends_propfind_with_body(status: int) -> None:
    def handler(req: Request) -> Reply:
        if req.path == "/.well-known/caldav":
            return Reply(status, headers={"Location": "/dav/"})
        return Reply(207, MS)

    with Stub(handler) as stub:
        r = _session(stub).request("PROPFIND", stub.url + ".well-known/caldav", body=BODY, depth="0")
        assert r.status == 207
        assert [(q.method, q.path) for q in stub.requests] == [("PROPFIND", "/.well-known/caldav"),
                                                               ("PROPFIND", "/dav/")]
        assert stub.requests[1].body == BODY
        assert stub.requests[1].headers.get("Depth") == "0"


def test_credentials_not_sent_to_other_origin() -> None:
    with Stub([Reply(207, MS)]) as other:
        def handler(req: Request) -> Reply:
            return Reply(302, headers={"Location": other.url + "elsewhere/"})

        with Stub(handler) as trusted:
            r = _session(trusted).request("PROPFIND", trusted.url, body=BODY, depth="0")
            assert r.status == 207
            assert trusted.requests[0].headers.get("Authorization", "").startswith("Basic ")
        assert len(other.requests) == 1
        assert "Authorization" not in other.requests[0].headers
        assert other.requests[0].method == "PROPFIND"


def test_no_credentials_without_trust() -> None:
    with Stub([Reply(207, MS)]) as stub:
        DavSession(username="alice", password="pw").request("PROPFIND", stub.url, body=BODY, depth="0")
        assert "Authorization" not in stub.requests[0].headers


def test_redirect_loop_is_refused() -> None:
    with Stub([Reply(302, headers={"Location": "/again"})]) as stub, pytest.raises(E.InvalidResponseError):
        _session(stub).request("PROPFIND", stub.url, body=BODY, depth="0")


def test_503_retried_for_propfind() -> None:
    with Stub([Reply(503, headers={"Retry-After": "0"}), Reply(207, MS)]) as stub:
        s = _session(stub)
        assert s.request("PROPFIND", stub.url, body=BODY, depth="0").status == 207
        assert len(stub.requests) == 2
        assert s.stats.requests == 2


def test_503_not_retried_for_put() -> None:
    with Stub([Reply(503, headers={"Retry-After": "0"}), Reply(201)]) as stub:
        with pytest.raises(E.ServerError):
            _session(stub).request("PUT", stub.url + "a.ics", body=b"BEGIN:VCALENDAR\r\n")
        assert len(stub.requests) == 1


def test_retries_give_up_with_server_error() -> None:
    with Stub([Reply(503, headers={"Retry-After": "0"})]) as stub:
        with pytest.raises(E.ServerError):
            _session(stub, retries=2).request("PROPFIND", stub.url, body=BODY, depth="0")
        assert len(stub.requests) == 3


def test_answer_larger_than_max_body_refused() -> None:
    with Stub([Reply(207, b"x" * 200_000)]) as stub, pytest.raises(E.InvalidResponseError):
        _session(stub, max_body=100_000).request("PROPFIND", stub.url, body=BODY, depth="0")


def test_silent_server_times_out() -> None:
    timeout = 1.5
    with Stub([Reply(hang=True)]) as stub:
        s = _session(stub, timeout=timeout)
        started = time.monotonic()
        with pytest.raises(E.TransportError):
            s.request("PROPFIND", stub.url, body=BODY, depth="0")
        assert time.monotonic() - started < timeout + 2
        assert s.reachable is False


def test_closed_port_is_transport_error() -> None:
    stub = Stub([Reply(207, MS)])
    url = stub.url
    stub.close()
    with pytest.raises(E.TransportError):
        DavSession(timeout=3).request("PROPFIND", url, body=BODY, depth="0")


def test_digest_challenge_answered_with_digest() -> None:
    challenge = {"WWW-Authenticate": 'Digest realm="cal", nonce="abc123", qop="auth", algorithm=MD5'}

    def handler(req: Request) -> Reply:
        if req.headers.get("Authorization", "").startswith("Digest "):
            return Reply(207, MS)
        return Reply(401, b"no", challenge)

    with Stub(handler) as stub:
        s = _session(stub)
        assert s.request("PROPFIND", stub.url, body=BODY, depth="0").status == 207
        last = stub.requests[-1]
        assert last.headers["Authorization"].startswith("Digest ")
        assert 'username="alice"' in last.headers["Authorization"]
        assert last.method == "PROPFIND" and last.body == BODY
        # From then on Digest straight away: no more Basic.
        n = len(stub.requests)
        s.request("PROPFIND", stub.url, body=BODY, depth="0")
        assert not any(q.headers.get("Authorization", "").startswith("Basic") for q in stub.requests[n:])


def test_401_raises_unauthorized() -> None:
    challenge = {"WWW-Authenticate": 'Basic realm="x"'}
    with Stub([Reply(401, b"", challenge)]) as stub, pytest.raises(E.UnauthorizedError):
        _session(stub).request("PROPFIND", stub.url, body=BODY, depth="0")


def test_stats_count_requests_by_method() -> None:
    with Stub([Reply(207, MS)]) as stub:
        s = _session(stub)
        for _ in range(3):
            s.request("PROPFIND", stub.url, body=BODY, depth="1")
        s.request("REPORT", stub.url, body=BODY, depth="1")
        snap = s.stats.snapshot()
        assert snap["requests"] == 4 == len(stub.requests)
        assert snap["by_method"] == {"PROPFIND": 3, "REPORT": 1}
        assert snap["bytes_received"] == 4 * len(MS)


def test_request_headers() -> None:
    with Stub([Reply(207, MS)]) as stub:
        _session(stub).request("REPORT", stub.url, body=BODY, depth="1")
        req = stub.requests[0]
        assert req.headers["Depth"] == "1"
        assert req.headers["Content-Type"].startswith("application/xml")
        assert req.headers["User-Agent"].startswith("caldavfs/")


@pytest.mark.parametrize(("url", "local"), [
    ("http://127.0.0.1:5232/", True), ("http://127.8.9.1/dav/", True), ("http://localhost:8080/", True),
    ("https://LOCALHOST/", True), ("http://[::1]:5232/", True), ("http://cal.localhost/", True),
    ("https://caldav.icloud.com/", False), ("http://192.168.1.2/", False), ("http://10.0.0.1/", False),
    ("http://localhost.example.com/", False), ("http://[::2]/", False),
])
def test_on_this_machine_by_name_only(url: str, local: bool) -> None:
    assert on_this_machine(url) is local


def test_a_server_on_this_machine_is_asked_for_uncompressed_answers() -> None:
    seen: list[str] = []

    def handler(req: Request) -> Reply:
        seen.append(req.headers.get("Accept-Encoding", ""))
        return Reply(200, b"ok")

    with Stub(handler) as stub:
        DavSession(timeout=5).request("GET", stub.url)
    assert seen == ["identity"]
