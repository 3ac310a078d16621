"""Bearer-token interceptors, mutual TLS and token files, on a tiny gRPC server at 127.0.0.1."""

from __future__ import annotations

import logging
import os
import shutil
import stat
import threading
from collections.abc import Callable, Iterator
from concurrent import futures
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from edgeweave.errors import EdgeWeaveError
from edgeweave.security import (
    ClientTLS,
    SecurityError,
    TokenAuthInterceptor,
    authed_channel,
    client_credentials,
    generate_token,
    load_token,
    make_ca,
    make_fleet_certs,
    make_node_cert,
    server_credentials,
    token_call_credentials,
    write_token,
)

TIMEOUT = 5.0  # per-call deadline; every call goes to 127.0.0.1 and normally takes ms


def _ident(b: bytes) -> bytes:
    return b


class _Service:
    """Echo / Stream / Sum / Chat / Health, recording which handlers actually ran."""

    def __init__(self) -> None:
        self.calls: list[str] = []
        self._lock = threading.Lock()

    def _ran(self, name: str) -> None:
        with self._lock:
            self.calls.append(name)

    def echo(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._ran("Echo")
        return b"echo:" + request

    def stream(self, request: bytes, context: grpc.ServicerContext) -> Iterator[bytes]:
        self._ran("Stream")
        for i in range(3):
            yield request + str(i).encode()

    def sum(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> bytes:
        self._ran("Sum")
        return b"+".join(requests)

    def chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._ran("Chat")
        for r in requests:
            yield r.upper()

    def health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._ran("Health")
        return b"SERVING"

    def handler(self) -> grpc.GenericRpcHandler:
        kw = {"request_deserializer": _ident, "response_serializer": _ident}
        return grpc.method_handlers_generic_handler(
            "ew.Test",
            {
                "Echo": grpc.unary_unary_rpc_method_handler(self.echo, **kw),
                "Stream": grpc.unary_stream_rpc_method_handler(self.stream, **kw),
                "Sum": grpc.stream_unary_rpc_method_handler(self.sum, **kw),
                "Chat": grpc.stream_stream_rpc_method_handler(self.chat, **kw),
                "Health": grpc.unary_unary_rpc_method_handler(self.health, **kw),
            },
        )


ServerFactory = Callable[..., tuple[str, _Service, TokenAuthInterceptor | None]]


@pytest.fixture
def serve() -> Iterator[ServerFactory]:
    """Start servers on 127.0.0.1:<ephemeral>; every one is stopped at teardown."""
    servers: list[grpc.Server] = []

    def start(
        token: str | None = None,
        open_methods: tuple[str, ...] = (),
        creds: grpc.ServerCredentials | None = None,
    ) -> tuple[str, _Service, TokenAuthInterceptor | None]:
        svc = _Service()
        interceptor = TokenAuthInterceptor(token, open_methods) if token else None
        server = grpc.server(
            futures.ThreadPoolExecutor(max_workers=2),
            interceptors=[interceptor] if interceptor else [],
            options=[("grpc.so_reuseport", 0)],
        )
        servers.append(server)
        server.add_generic_rpc_handlers((svc.handler(),))
        if creds is None:
            port = server.add_insecure_port("127.0.0.1:0")
        else:
            port = server.add_secure_port("127.0.0.1:0", creds)
        assert port > 0
        server.start()
        return f"127.0.0.1:{port}", svc, interceptor

    yield start
    for s in servers:
        s.stop(0)


@pytest.fixture
def channels() -> Iterator[Callable[..., grpc.Channel]]:
    made: list[grpc.Channel] = []

    def make(*args, **kwargs) -> grpc.Channel:
        ch = authed_channel(*args, **kwargs)
        made.append(ch)
        return ch

    yield make
    for ch in made:
        ch.close()


def _echo(ch: grpc.Channel, payload: bytes = b"hi", **kw) -> bytes:
    fn = ch.unary_unary("/ew.Test/Echo", request_serializer=_ident, response_deserializer=_ident)
    return fn(payload, timeout=TIMEOUT, **kw)


def _stream(ch: grpc.Channel, payload: bytes = b"s") -> list[bytes]:
    fn = ch.unary_stream("/ew.Test/Stream", request_serializer=_ident, response_deserializer=_ident)
    return list(fn(payload, timeout=TIMEOUT))


def _sum(ch: grpc.Channel) -> bytes:
    fn = ch.stream_unary("/ew.Test/Sum", request_serializer=_ident, response_deserializer=_ident)
    return fn(iter([b"a", b"b"]), timeout=TIMEOUT)


def _chat(ch: grpc.Channel) -> list[bytes]:
    fn = ch.stream_stream("/ew.Test/Chat", request_serializer=_ident, response_deserializer=_ident)
    return list(fn(iter([b"x", b"y"]), timeout=TIMEOUT))


def _health(ch: grpc.Channel) -> bytes:
    fn = ch.unary_unary("/ew.Test/Health", request_serializer=_ident, response_deserializer=_ident)
    return fn(b"", timeout=TIMEOUT)


def _code(call: Callable[[], object]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details() or ""


# --------------------------------------------------------------------------- bearer tokens


def test_correct_token_passes_all_four_cardinalities(serve, channels) -> None:
    token = generate_token()
    target, svc, icpt = serve(token=token)
    ch = channels(target, token=token)
    assert _echo(ch) == b"echo:hi"
    assert _stream(ch) == [b"s0", b"s1", b"s2"]
    assert _sum(ch) == b"a+b"
    assert _chat(ch) == [b"X", b"Y"]
    assert svc.calls == ["Echo", "Stream", "Sum", "Chat"]
    assert icpt is not None and icpt.rejected == 0


def test_missing_token_rejected_without_running_handler(serve, channels) -> None:
    target, svc, icpt = serve(token=generate_token())
    ch = channels(target)
    code, details = _code(lambda: _echo(ch))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert "missing bearer token" in details
    assert svc.calls == []
    assert icpt is not None and icpt.rejected == 1


def test_wrong_token_rejected_then_server_keeps_serving(serve, channels) -> None:
    token = generate_token()
    target, svc, icpt = serve(token=token)
    bad = channels(target, token=generate_token())
    for _ in range(3):
        code, details = _code(lambda: _echo(bad))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        assert "invalid bearer token" in details
        assert token not in details
    anon = channels(target)
    assert _code(lambda: _echo(anon))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert svc.calls == []
    good = channels(target, token=token)
    assert _echo(good, b"after") == b"echo:after"
    assert svc.calls == ["Echo"]
    assert icpt is not None and icpt.rejected == 4


@pytest.mark.parametrize(
    "call", [_stream, _sum, _chat], ids=["unary_stream", "stream_unary", "stream_stream"]
)
def test_streaming_methods_are_protected(serve, channels, call) -> None:
    target, svc, icpt = serve(token=generate_token())
    for ch in (channels(target), channels(target, token=generate_token())):
        code, _ = _code(lambda ch=ch: call(ch))
        assert code == grpc.StatusCode.UNAUTHENTICATED
    assert svc.calls == []
    assert icpt is not None and icpt.rejected == 2


def test_allow_listed_method_is_open_others_are_not(serve, channels) -> None:
    target, svc, _ = serve(token=generate_token(), open_methods=("ew.Test/Health",))
    anon = channels(target)
    assert _health(anon) == b"SERVING"
    assert _code(lambda: _echo(anon))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert svc.calls == ["Health"]


def test_unknown_method_hides_existence_from_unauthenticated(serve, channels) -> None:
    token = generate_token()
    target, _, _ = serve(token=token)

    def nope(ch: grpc.Channel) -> object:
        fn = ch.unary_unary(
            "/ew.Test/Nope", request_serializer=_ident, response_deserializer=_ident
        )
        return fn(b"", timeout=TIMEOUT)

    assert _code(lambda: nope(channels(target)))[0] == grpc.StatusCode.UNAUTHENTICATED
    assert _code(lambda: nope(channels(target, token=token)))[0] == grpc.StatusCode.UNIMPLEMENTED


def test_token_rotation_and_raw_metadata(serve, channels) -> None:
    old, new = generate_token(), generate_token()
    target, _, _ = serve(token=[old, new])
    assert _echo(channels(target, token=old)) == b"echo:hi"
    assert _echo(channels(target, token=new)) == b"echo:hi"
    plain = channels(target)
    # Hand-written metadata works too; the scheme is case-insensitive.
    assert _echo(plain, metadata=(("authorization", f"bearer {new}"),)) == b"echo:hi"
    code, _ = _code(lambda: _echo(plain, metadata=(("authorization", f"Basic {new}"),)))
    assert code == grpc.StatusCode.UNAUTHENTICATED


def test_client_interceptor_replaces_caller_authorization(serve, channels) -> None:
    token = generate_token()
    target, _, _ = serve(token=token)
    ch = channels(target, token=token)
    assert _echo(ch, metadata=(("authorization", "Bearer wrong-wrong-wrong-wrong"),)) == b"echo:hi"


def test_interceptor_rejects_bad_configuration() -> None:
    with pytest.raises(SecurityError, match="at least 16"):
        TokenAuthInterceptor("short")
    with pytest.raises(SecurityError, match="no token"):
        TokenAuthInterceptor([])
    with pytest.raises(SecurityError, match="full method name"):
        TokenAuthInterceptor(generate_token(), open_methods=("Check",))
    with pytest.raises(SecurityError, match="printable ASCII"):
        authed_channel("127.0.0.1:1", token="has spaces in the token")


def test_rejected_counter_is_thread_safe() -> None:
    icpt = TokenAuthInterceptor(generate_token())

    class Details:
        method = "/ew.Test/Echo"
        invocation_metadata = (("authorization", "Bearer nope-nope-nope-nope"),)

    def hammer() -> None:
        for _ in range(500):
            handler = icpt.intercept_service(lambda d: None, Details())
            assert handler is not None

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert icpt.rejected == 2000


# --------------------------------------------------------------------------- mutual TLS


@pytest.fixture(scope="module")
def fleet(tmp_path_factory) -> tuple[Path, Path]:
    """Two independent fleets (different CAs), made once for all TLS tests."""
    a = tmp_path_factory.mktemp("fleet_a")
    b = tmp_path_factory.mktemp("fleet_b")
    make_fleet_certs(a, ["edge", "device"], hosts=["127.0.0.1", "localhost"])
    make_fleet_certs(b, ["device"], hosts=["127.0.0.1", "localhost"])
    return a, b


def test_fleet_files_and_key_permissions(fleet) -> None:
    a, _ = fleet
    files = sorted(str(p.relative_to(a)) for p in a.rglob("*") if p.is_file())
    # the CA key has its own folder; each node's folder (what is copied to it) lacks it
    assert files == ["ca/ca.key", "ca/ca.pem", "device/ca.pem", "device/device.key",
                     "device/device.pem", "edge/ca.pem", "edge/edge.key", "edge/edge.pem"]
    if os.name == "posix":
        for key in a.rglob("*.key"):
            assert stat.S_IMODE(key.stat().st_mode) == 0o600, key
    cert = x509.load_pem_x509_certificate((a / "edge" / "edge.pem").read_bytes())
    ca = x509.load_pem_x509_certificate((a / "ca" / "ca.pem").read_bytes())
    assert (a / "edge" / "ca.pem").read_bytes() == (a / "ca" / "ca.pem").read_bytes()
    cert.verify_directly_issued_by(ca)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH} <= set(eku)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]


def test_mtls_ca_signed_client_succeeds(fleet, serve, channels) -> None:
    a, _ = fleet
    target, svc, _ = serve(creds=server_credentials(a, "edge"))
    ch = channels(target, tls=ClientTLS.for_node(a, "device"))
    assert _echo(ch) == b"echo:hi"
    assert _stream(ch) == [b"s0", b"s1", b"s2"]
    assert svc.calls == ["Echo", "Stream"]


def test_mtls_with_server_name_override(fleet, serve, channels) -> None:
    a, _ = fleet
    target, _, _ = serve(creds=server_credentials(a, "edge"))
    port = target.rsplit(":", 1)[1]
    d = a / "device"
    tls = ClientTLS(
        ca=d / "ca.pem", cert=d / "device.pem", key=d / "device.key", server_name="localhost"
    )
    assert _echo(channels(f"127.0.0.1:{port}", tls=tls)) == b"echo:hi"


def test_mtls_client_without_cert_fails(fleet, serve, channels) -> None:
    a, _ = fleet
    target, svc, _ = serve(creds=server_credentials(a, "edge"))
    ch = channels(target, tls=ClientTLS(ca=a / "ca" / "ca.pem"))
    code, _ = _code(lambda: _echo(ch))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert svc.calls == []


def test_mtls_client_cert_from_other_ca_fails(fleet, serve, channels) -> None:
    a, b = fleet
    target, svc, _ = serve(creds=server_credentials(a, "edge"))
    # Trusts the right CA for the server, but presents a certificate from fleet B.
    tls = ClientTLS(ca=a / "ca" / "ca.pem", cert=b / "device" / "device.pem",
                    key=b / "device" / "device.key")
    code, _ = _code(lambda: _echo(channels(target, tls=tls)))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert svc.calls == []


def test_mtls_client_rejects_server_from_other_ca(fleet, serve, channels) -> None:
    a, b = fleet
    target, svc, _ = serve(creds=server_credentials(a, "edge"))
    code, _ = _code(lambda: _echo(channels(target, tls=ClientTLS.for_node(b, "device"))))
    assert code == grpc.StatusCode.UNAVAILABLE
    assert svc.calls == []


def test_mtls_plus_token(fleet, serve, channels) -> None:
    a, _ = fleet
    token = generate_token()
    target, svc, _ = serve(token=token, creds=server_credentials(a, "edge"))
    tls = ClientTLS.for_node(a, "device")
    code, _ = _code(lambda: _echo(channels(target, tls=tls)))
    assert code == grpc.StatusCode.UNAUTHENTICATED
    assert _echo(channels(target, tls=tls, token=token)) == b"echo:hi"
    # Call credentials are the alternative on secure channels.
    fn = channels(target, tls=tls).unary_unary(
        "/ew.Test/Echo", request_serializer=_ident, response_deserializer=_ident
    )
    assert fn(b"cc", timeout=TIMEOUT, credentials=token_call_credentials(token)) == b"echo:cc"
    assert svc.calls == ["Echo", "Echo"]


def test_make_ca_and_node_cert_separately(tmp_path) -> None:
    ca = make_ca(tmp_path / "ca", name="my-ca", days=2)
    assert ca.cert == tmp_path / "ca" / "ca.pem"
    pair = make_node_cert(
        tmp_path / "nodes",
        "cloud-1",
        tmp_path / "ca",
        hosts=["10.0.0.5", "cloud.example", "::1"],
        days=30,
    )
    assert pair.cert.name == "cloud-1.pem" and pair.key.name == "cloud-1.key"
    cert = x509.load_pem_x509_certificate(pair.cert.read_bytes())
    ca_cert = x509.load_pem_x509_certificate(ca.cert.read_bytes())
    # Never outlives its CA.
    assert cert.not_valid_after_utc <= ca_cert.not_valid_after_utc
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert {str(ip) for ip in san.get_values_for_type(x509.IPAddress)} == {"10.0.0.5", "::1"}


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"node_name": "../evil"}, "node name"),
        ({"node_name": "ca"}, "reserved"),
        ({"hosts": []}, "hosts is empty"),
        ({"hosts": ["bad host"]}, "not a valid IP address or DNS name"),
        ({"days": 0}, "days"),
    ],
)
def test_make_node_cert_rejects_bad_input(tmp_path, kwargs, match) -> None:
    make_ca(tmp_path)
    args = {"node_name": "edge", "hosts": ["127.0.0.1"], "days": 10} | kwargs
    with pytest.raises(SecurityError, match=match):
        make_node_cert(tmp_path, ca_dir=tmp_path, **args)


def test_missing_and_corrupt_pem_files_named(tmp_path) -> None:
    with pytest.raises(SecurityError, match=r"CA certificate .*ca\.pem does not exist"):
        make_node_cert(tmp_path, "edge", tmp_path)
    make_fleet_certs(tmp_path, ["edge"], hosts=["127.0.0.1"])
    (tmp_path / "edge" / "edge.key").write_text("-----BEGIN PRIVATE KEY-----\ngarbage\n")
    with pytest.raises(SecurityError, match=r"edge\.key is not a valid"):
        server_credentials(tmp_path, "edge")
    with pytest.raises(SecurityError, match=r"node 'nope'.*nope\.pem does not exist"):
        server_credentials(tmp_path, "nope")
    (tmp_path / "edge" / "ca.pem").write_bytes(b"not a pem")
    with pytest.raises(SecurityError, match=r"ca\.pem is not a valid PEM certificate"):
        client_credentials(ClientTLS(ca=tmp_path / "edge" / "ca.pem"))


def test_mismatched_key_is_named(tmp_path) -> None:
    make_fleet_certs(tmp_path, ["edge", "device"], hosts=["127.0.0.1"])
    tls = ClientTLS(ca=tmp_path / "ca" / "ca.pem", cert=tmp_path / "edge" / "edge.pem",
                    key=tmp_path / "device" / "device.key")
    with pytest.raises(SecurityError, match=r"device\.key does not belong to .*edge\.pem"):
        client_credentials(tls)
    with pytest.raises(SecurityError, match="both cert and key"):
        ClientTLS(ca=tmp_path / "ca" / "ca.pem", cert=tmp_path / "edge" / "edge.pem")


def test_reuse_ca_keeps_existing_certs_valid(tmp_path) -> None:
    first = make_fleet_certs(tmp_path, ["edge"])
    ca_before = first["ca"].cert.read_bytes()
    make_fleet_certs(tmp_path, ["device"], reuse_ca=True)
    assert (tmp_path / "ca" / "ca.pem").read_bytes() == ca_before
    assert (tmp_path / "device" / "ca.pem").read_bytes() == ca_before
    make_fleet_certs(tmp_path, ["device"])
    assert (tmp_path / "ca" / "ca.pem").read_bytes() != ca_before
    with pytest.raises(SecurityError, match="more than once"):
        make_fleet_certs(tmp_path, ["a", "a"])


# --------------------------------------------------------------------------- token files


def test_write_and_load_token_roundtrip(tmp_path) -> None:
    path = tmp_path / "sub" / "token"
    token = write_token(path)
    assert len(token) >= 40
    assert load_token(path) == token
    if os.name == "posix":
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    path.write_text(f"  \n{token}\n\n")
    assert load_token(path) == token
    assert write_token(tmp_path / "t2", "x" * 16) == "x" * 16
    assert generate_token() != generate_token()


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (None, "does not exist"),
        ("", "is empty"),
        ("  \n\t\n", "is empty"),
        ("short-token", "too short"),
        ("two words-that-are-long-enough", "single token"),
    ],
    ids=["missing", "empty", "whitespace", "too_short", "two_words"],
)
def test_token_file_errors_name_the_file(tmp_path, content, match) -> None:
    path = tmp_path / "edge.token"
    if content is not None:
        path.write_text(content)
    with pytest.raises(SecurityError, match=match) as info:
        load_token(path)
    assert str(path) in str(info.value)
    assert isinstance(info.value, EdgeWeaveError)


def test_token_file_is_a_directory(tmp_path) -> None:
    with pytest.raises(SecurityError, match="not a regular file"):
        load_token(tmp_path)


# --------------------------------------------------------------------------- hardening


def test_auth_failures_are_logged_with_the_peer_once_per_cause(serve, channels, caplog,
                                                              monkeypatch) -> None:
    import edgeweave.security.tokens as security
    from edgeweave.rpc import RateLimitedLog

    monkeypatch.setattr(security, "_rejections", RateLimitedLog(security.log, interval_s=60))
    target, _, _ = serve(token=generate_token())
    with caplog.at_level(logging.WARNING, logger="edgeweave.security"):
        for _ in range(5):
            _code(lambda: _echo(channels(target, token=generate_token())))
        _code(lambda: _echo(channels(target)))
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 2  # one per cause, not one per call
    assert "from ipv4:127.0.0.1:" in lines[0] and "invalid bearer token" in lines[0]
    assert "missing bearer token" in lines[1]


def test_a_nodes_own_folder_is_all_it_needs_and_a_ca_key_there_is_warned(
        fleet, serve, channels, tmp_path, caplog) -> None:
    a, _ = fleet
    on_device = tmp_path / "copied-to-the-device"
    shutil.copytree(a / "device", on_device)
    target, _, _ = serve(creds=server_credentials(a, "edge"))
    with caplog.at_level(logging.WARNING, logger="edgeweave.security"):
        assert _echo(channels(target, tls=ClientTLS.for_node(on_device, "device"))) == b"echo:hi"
        assert "CA private key" not in caplog.text
        shutil.copy(a / "ca" / "ca.key", on_device / "ca.key")  # the old, flat layout's mistake
        ClientTLS.for_node(on_device, "device")
    assert "holds the CA private key" in caplog.text


def test_plaintext_beyond_loopback_is_warned(caplog) -> None:
    from edgeweave.runtime.node import ServeOptions, start_node
    from edgeweave.runtime.server import NodeConfig

    token = generate_token()
    with caplog.at_level(logging.WARNING, logger="edgeweave.runtime"):
        for listen in ("127.0.0.1:0", "0.0.0.0:0"):
            server, _, _ = start_node(NodeConfig("edge", "edge"), ServeOptions(listen, token))
            server.stop(0)
    warned = [r.getMessage() for r in caplog.records if "plaintext" in r.getMessage()]
    assert len(warned) == 1 and "0.0.0.0:0" in warned[0] and "--cert-dir" in warned[0]
