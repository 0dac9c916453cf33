"""The suite's network guard (conftest.py): nothing leaves the machine, loopback still works.

The refused calls are proved refused *before* the real socket call: a spy stands in for the real
function beneath the guard and must never be called. No packet can leave even with the guard
broken: the sockets are bound to loopback first (Linux refuses to route from a loopback address
to any other), and the resolver beneath ``socket.getaddrinfo`` is a spy too.
"""

from __future__ import annotations

import _socket
import socket
import threading

import conftest
import pytest
from conftest import NetworkBlocked

OUTSIDE = ("10.255.255.1", 9)  # a private address nothing here answers; never actually tried


@pytest.fixture
def spies(monkeypatch):
    """The real socket functions beneath the guard, replaced by recorders that do nothing."""
    calls: list[tuple[str, object]] = []

    def spy(name):
        def record(*args, **kwargs):
            calls.append((name, args[1] if name != "getaddrinfo" else args[0]))
            raise AssertionError(f"the guard let {name} through to the real call")

        return record

    for name in ("connect", "connect_ex", "sendto", "getaddrinfo"):
        monkeypatch.setitem(conftest._real, name, spy(name))
    monkeypatch.setattr(_socket, "getaddrinfo", spy("getaddrinfo"))  # the resolver itself
    yield calls
    conftest.blocked_attempts.clear()  # the refusals below were the point of the test


def bound_to_loopback(family: int, kind: int) -> socket.socket:
    sock = socket.socket(family, kind)
    sock.bind(("127.0.0.1", 0) if family == socket.AF_INET else ("::1", 0))
    sock.settimeout(1)
    return sock


@pytest.mark.parametrize("call", ["connect", "connect_ex"])
def test_a_connection_outside_loopback_is_refused_before_it_is_made(spies, call):
    with (
        bound_to_loopback(socket.AF_INET, socket.SOCK_STREAM) as sock,
        pytest.raises(NetworkBlocked, match=r"10\.255\.255\.1"),
    ):
        getattr(sock, call)(OUTSIDE)
    assert spies == []
    assert len(conftest.blocked_attempts) == 1


def test_create_connection_and_names_are_refused_without_a_lookup(spies):
    with pytest.raises(NetworkBlocked, match="example.net"):
        socket.create_connection(("example.net", 443), timeout=1)
    with pytest.raises(NetworkBlocked, match="example.org"):
        socket.getaddrinfo("example.org", 80)
    assert spies == []


def test_a_datagram_outside_loopback_is_refused(spies):
    with bound_to_loopback(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        with pytest.raises(NetworkBlocked, match=r"10\.255\.255\.1"):
            sock.sendto(b"x", OUTSIDE)
        with pytest.raises(NetworkBlocked):
            sock.sendto(b"x", 0, OUTSIDE)
    assert spies == []


def test_an_ipv6_address_outside_loopback_is_refused(spies):
    try:
        sock = bound_to_loopback(socket.AF_INET6, socket.SOCK_STREAM)
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with (
        sock,
        pytest.raises(NetworkBlocked, match="2001:db8::1"),
    ):
        sock.connect(("2001:db8::1", 9, 0, 0))
    assert spies == []


def echo_once(server: socket.socket) -> None:
    connection, _ = server.accept()
    with connection:
        connection.sendall(connection.recv(16).upper())


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
def test_loopback_still_works(host):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        thread = threading.Thread(target=echo_once, args=(server,), daemon=True)
        thread.start()
        with socket.create_connection((host, server.getsockname()[1]), timeout=10) as client:
            client.sendall(b"ping")
            assert client.recv(16) == b"PING"
        thread.join(10)
    assert conftest.blocked_attempts == []


def test_ipv6_loopback_still_works():
    try:
        server = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
        server.bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback here")
    with server:
        server.listen(1)
        thread = threading.Thread(target=echo_once, args=(server,), daemon=True)
        thread.start()
        with socket.socket(socket.AF_INET6, socket.SOCK_STREAM) as client:
            client.settimeout(10)
            client.connect(server.getsockname()[:2])
            client.sendall(b"six")
            assert client.recv(16) == b"SIX"
        thread.join(10)


def test_unix_sockets_and_socket_pairs_still_work(tmp_path):
    left, right = socket.socketpair()
    with left, right:
        left.sendall(b"a")
        assert right.recv(1) == b"a"
    path = str(tmp_path / "s")
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as server:
        server.bind(path)
        server.listen(1)
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as client:
            client.connect(path)
            connection, _ = server.accept()
            with connection:
                client.sendall(b"u")
                assert connection.recv(1) == b"u"
    assert conftest.blocked_attempts == []


SWALLOWED = """
import socket

import conftest


def never(*args):
    raise OSError("the real connect must not be reached")


def test_the_code_catches_the_refusal(monkeypatch):
    monkeypatch.setitem(conftest._real, "connect", never)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))  # nothing can leave from here, guard or not
        try:
            sock.connect(("10.255.255.1", 9))
        except Exception:
            pass  # as a retry loop or a broad handler in the code under test would


def test_nothing_reached():
    pass
"""


def test_a_refusal_the_code_swallows_still_fails_the_test(pytester):
    """The guard's record, checked after each test, catches what an ``except`` hid."""
    from pathlib import Path

    pytester.makeconftest(Path(conftest.__file__).read_text())
    pytester.makepyfile(test_swallowed=SWALLOWED)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*a test tried to reach the network: connect*10.255.255.1*"])
