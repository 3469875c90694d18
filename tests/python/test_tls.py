"""Cross-language mutual TLS: a Python grpcio client with a certificate from the client CA (a
SPIFFE ID in its URI SAN) is served over TLS and recorded by that identity; one without a
certificate is refused at the handshake. Certificates are made here with `cryptography`."""

import datetime
import ipaddress
import pathlib
import tempfile

import grpc
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from conftest import running_server

CALLER = "spiffe://test.example/ns/agents/sa/python"


def _pem_key(key):
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def _certificate(subject, issuer_name, public_key, signing_key, sans=None, ca=False):
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, issuer_name)]))
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                          content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False,
                          encipher_only=False, decipher_only=False),
            critical=True,
        )
    return builder.sign(signing_key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


@pytest.fixture(scope="module")
def pki():
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate("python test CA", "python test CA", ca_key.public_key(), ca_key, ca=True)
    server_key = ec.generate_private_key(ec.SECP256R1())
    server = _certificate(
        "warrant", "python test CA", server_key.public_key(), ca_key,
        sans=[x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))],
    )
    client_key = ec.generate_private_key(ec.SECP256R1())
    client = _certificate(
        "python", "python test CA", client_key.public_key(), ca_key,
        sans=[x509.UniformResourceIdentifier(CALLER)],
    )
    return {"ca": ca, "server": server, "server_key": _pem_key(server_key),
            "client": client, "client_key": _pem_key(client_key)}


@pytest.fixture(scope="module")
def tls_server(pki):
    files = pathlib.Path(tempfile.mkdtemp(prefix="warrant-tls-"))
    for name in ("ca", "server", "server_key"):
        (files / f"{name}.pem").write_bytes(pki[name])
    with running_server("--tls-cert", str(files / "server.pem"),
                        "--tls-key", str(files / "server_key.pem"),
                        "--tls-client-ca", str(files / "ca.pem")) as addresses:
        yield addresses


def _channel(address, pki, with_certificate):
    credentials = grpc.ssl_channel_credentials(
        root_certificates=pki["ca"],
        private_key=pki["client_key"] if with_certificate else None,
        certificate_chain=pki["client"] if with_certificate else None,
    )
    return grpc.secure_channel(address, credentials,
                               options=[("grpc.ssl_target_name_override", "localhost")])


def test_a_certified_caller_is_served_and_recorded_by_its_identity(stubs, pki, tls_server):
    pb, pb_grpc = stubs
    with _channel(tls_server["check"], pki, True) as channel:
        answer = pb_grpc.AuthorizerStub(channel).Check(pb.CheckRequest(
            principal=pb.EntityRef(type="ApiKey", id="pipeline-etl"),
            action="read",
            resource=pb.EntityRef(type="Dataset", id="sales-2026"),
        ), timeout=5)
    assert answer.decision == pb.DECISION_ALLOW
    assert list(answer.reasons) == ["pipeline-etl-reads-sales"]
    assert answer.provenance.policy_links[0].template_id == "dataset-read-grant"

    with _channel(tls_server["admin"], pki, True) as channel:
        record = pb_grpc.DecisionLogStub(channel).GetDecision(
            pb.GetDecisionRequest(decision_id=answer.decision_id),
            metadata=[("authorization", f"Bearer {tls_server['token']}")],
            timeout=5,
        )
    assert f'"caller_identity":"{CALLER}"' in record.record_json


def test_a_caller_without_a_certificate_is_refused(stubs, pki, tls_server):
    pb, pb_grpc = stubs
    with _channel(tls_server["check"], pki, False) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            pb_grpc.AuthorizerStub(channel).Check(pb.CheckRequest(
                principal=pb.EntityRef(type="ApiKey", id="pipeline-etl"),
                action="read",
                resource=pb.EntityRef(type="Dataset", id="sales-2026"),
            ), timeout=5)
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE
