"""TLS to the gateway's internal listener: a CA, then mutual TLS. The
certificates are made here with the `cryptography` package."""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from harness import Gateway
from pushgate import TLS, AsyncPushClient, PushClient, PushgateError, RetryPolicy

ONCE = RetryPolicy(max_attempts=1)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _pem_key(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def _cert(
    name: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    sans: list[x509.GeneralName] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.timezone.utc)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[0].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
    else:
        builder = builder.add_extension(
            x509.KeyUsage(True, False, False, False, False, False, False, False, False), critical=True
        )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if usage:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


@dataclass
class Pki:
    """A CA; a server certificate for 127.0.0.1 and localhost; one for the
    name gateway.test only; a client certificate from the CA; and a client
    certificate from nobody (self-signed)."""

    dir: Path
    ca: Path
    server: tuple[Path, Path]
    named_server: tuple[Path, Path]
    client: tuple[Path, Path]
    stranger: tuple[Path, Path]


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("pushgate test CA", ca_key, None, ca=True)

    def write(stem: str, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[Path, Path]:
        (d / f"{stem}.pem").write_bytes(_pem(cert))
        (d / f"{stem}.key").write_bytes(_pem_key(key))
        return d / f"{stem}.pem", d / f"{stem}.key"

    (d / "ca.pem").write_bytes(_pem(ca))
    keys = {n: _key() for n in ("server", "named", "client", "stranger")}
    local = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
    server = _cert("server", keys["server"], (ca, ca_key), sans=local, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    named = _cert(
        "gateway.test", keys["named"], (ca, ca_key), sans=[x509.DNSName("gateway.test")], usage=ExtendedKeyUsageOID.SERVER_AUTH
    )
    client = _cert("producer", keys["client"], (ca, ca_key), sans=[x509.DNSName("producer")], usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    stranger = _cert("stranger", keys["stranger"], None, sans=[x509.DNSName("stranger")], usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    return Pki(
        dir=d,
        ca=d / "ca.pem",
        server=write("server", server, keys["server"]),
        named_server=write("named", named, keys["named"]),
        client=write("client", client, keys["client"]),
        stranger=write("stranger", stranger, keys["stranger"]),
    )


@pytest.fixture(scope="module")
def tls_gateway(pki: Pki) -> Iterator[Gateway]:
    gw = Gateway("--tls-cert", str(pki.server[0]), "--tls-key", str(pki.server[1]))
    yield gw
    assert gw.stop() == 0


@pytest.fixture(scope="module")
def mtls_gateway(pki: Pki) -> Iterator[Gateway]:
    gw = Gateway(
        "--tls-cert", str(pki.named_server[0]),
        "--tls-key", str(pki.named_server[1]),
        "--tls-client-ca", str(pki.ca),
    )  # fmt: skip
    yield gw
    assert gw.stop() == 0


def test_tls_with_a_ca(pki, tls_gateway, open_browser, user):
    with PushClient(tls_gateway.internal, tls=TLS(ca=pki.ca)) as client:
        browser = open_browser(user, gw=tls_gateway, counter=client)
        assert client.push(user, "chat", "over tls").delivered == 1
        assert browser.recv() == "over tls"
    # The CA as PEM bytes, and as a bare path.
    with PushClient(tls_gateway.internal, tls=TLS(ca=pki.ca.read_bytes())) as client:
        assert client.online([user]) == {user: 1}
    with PushClient(tls_gateway.internal, tls=str(pki.ca)) as client:
        assert client.online([user]) == {user: 1}


def test_tls_refuses_what_it_cannot_verify(pki, tls_gateway, user):
    for tls in (None, TLS(ca=pki.stranger[0])):
        with PushClient(tls_gateway.internal, tls=tls, retry=ONCE) as client:
            with pytest.raises(PushgateError) as err:
                client.online([user])
            assert err.value.code == grpc.StatusCode.UNAVAILABLE, tls


def test_mutual_tls_needs_a_client_certificate_from_the_ca(pki, mtls_gateway, open_browser, user):
    trusted = TLS(ca=pki.ca, cert=pki.client[0], key=pki.client[1], server_name="gateway.test")
    with PushClient(mtls_gateway.internal, tls=trusted) as client:
        browser = open_browser(user, gw=mtls_gateway, counter=client)
        assert client.push(user, "chat", "mutual").delivered == 1
        assert browser.recv() == "mutual"
    refused = [
        TLS(ca=pki.ca, server_name="gateway.test"),  # no client certificate
        TLS(ca=pki.ca, cert=pki.stranger[0], key=pki.stranger[1], server_name="gateway.test"),  # not from the CA
        TLS(ca=pki.ca, cert=pki.client[0], key=pki.client[1]),  # 127.0.0.1 is not the certificate's name
    ]
    for tls in refused:
        with PushClient(mtls_gateway.internal, tls=tls, retry=ONCE) as client:
            with pytest.raises(PushgateError) as err:
                client.push(user, "chat", "refused")
            assert err.value.code == grpc.StatusCode.UNAVAILABLE, tls
    with PushClient(mtls_gateway.internal, tls=trusted) as client:
        client.push(user, "chat", "end")
    assert browser.recv() == "end", "no refused producer's push arrived"


async def test_the_async_client_over_mutual_tls(pki, mtls_gateway, user):
    tls = TLS(ca=pki.ca, cert=pki.client[0].read_bytes(), key=pki.client[1].read_bytes(), server_name="gateway.test")
    async with AsyncPushClient(mtls_gateway.internal, tls=tls) as client:
        assert (await client.push(user, "chat", "x")).delivered == 0


def test_tls_settings_are_checked():
    with pytest.raises(ValueError):
        TLS(ca="ca.pem", cert="client.pem")
    with pytest.raises(TypeError):
        PushClient("127.0.0.1:1", tls=42)  # type: ignore[arg-type]
