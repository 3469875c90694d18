"""Shared by the cross-language tests: the binary under test and stubs compiled from Warrant's
own protos with grpcio-tools."""

import contextlib
import datetime
import ipaddress
import os
import pathlib
import subprocess
import sys
import tempfile

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from grpc_tools import protoc

ROOT = pathlib.Path(__file__).resolve().parents[2]
BINARY = os.environ.get("WARRANT_BIN", str(ROOT / "target" / "debug" / "warrant"))
# The SPIFFE ID in the test client's certificate.
CALLER = "spiffe://test.example/ns/agents/sa/python"


@pytest.fixture(scope="module")
def stubs():
    out = tempfile.mkdtemp(prefix="warrant-stubs-")
    include = str(pathlib.Path(protoc.__file__).parent / "_proto")
    status = protoc.main([
        "grpc_tools.protoc", f"-I{ROOT / 'proto'}", f"-I{include}",
        f"--python_out={out}", f"--grpc_python_out={out}", "warrant/v1/authorizer.proto",
        "warrant/v1/admin.proto",
    ])
    assert status == 0, "protoc failed"
    sys.path.insert(0, out)
    from warrant.v1 import authorizer_pb2, authorizer_pb2_grpc
    return authorizer_pb2, authorizer_pb2_grpc


@pytest.fixture(scope="module")
def admin_stubs(stubs):
    from warrant.v1 import admin_pb2, admin_pb2_grpc
    return admin_pb2, admin_pb2_grpc




def decision_record(addresses, decision_id):
    """The ledger record of `decision_id`, from the running server's DecisionLog (as JSON)."""
    import json

    import grpc
    from warrant_client._proto.warrant.v1 import authorizer_pb2, authorizer_pb2_grpc

    with grpc.insecure_channel(addresses["admin"]) as channel:
        found = authorizer_pb2_grpc.DecisionLogStub(channel).GetDecision(
            authorizer_pb2.GetDecisionRequest(decision_id=decision_id),
            metadata=[("authorization", f"Bearer {addresses['token']}")], timeout=5)
    return json.loads(found.record_json)


@contextlib.contextmanager
def running_server(*extra_args, policies=ROOT / "policies", data=None):
    """`warrant serve` on `policies` (the bundled ones unless given) with ephemeral ports, a data
    folder of its own (or `data`) and `extra_args`: yields the Check, admin, AuthZEN and console
    addresses, the admin token and the data folder; killed afterwards."""
    data = data or tempfile.mkdtemp(prefix="warrant-data-")
    process = subprocess.Popen(
        [BINARY, "serve", "--listen", "127.0.0.1:0", "--policies", str(policies),
         "--data-dir", data, "--metrics-listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0",
         "--authzen-listen", "127.0.0.1:0", "--console-listen", "127.0.0.1:0", *extra_args],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    try:
        addresses = {}
        for line in process.stdout:
            for name in ("metrics", "admin", "authzen", "console", "listening"):
                prefix = f"warrant {name} on "
                if line.startswith(prefix):
                    addresses[name] = line.removeprefix(prefix).split()[0]
            if "listening" in addresses:
                break
        assert "listening" in addresses, "server did not start"
        token = (pathlib.Path(data) / "admin.token").read_text().strip()
        yield {"check": addresses["listening"], "admin": addresses["admin"],
               "authzen": addresses["authzen"], "metrics": addresses.get("metrics"),
               "console": addresses.get("console"), "token": token, "data": data}
    finally:
        process.kill()
        process.wait()


# Certificates made here with `cryptography`: a CA, the server's (localhost, 127.0.0.1) and a
# client's with the SPIFFE ID `CALLER`.


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
