"""Cross-language verified credentials: RS256 tokens signed here with `cryptography`, their
key published as a JWKS over HTTPS by Python's own server (as an identity provider's `jwks_uri`
is), verified by Warrant for a `grpcio` Check; a token signed by another key under the same key
id is denied as a bad signature."""

import base64
import json
import pathlib
import ssl
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import grpc
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from conftest import running_server

ISSUER = "https://idp.python.test"


def _b64(data):
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _jwk(key, kid):
    numbers = key.public_key().public_numbers()
    as_bytes = lambda n: n.to_bytes((n.bit_length() + 7) // 8, "big")
    return {"kty": "RSA", "kid": kid, "alg": "RS256", "use": "sig",
            "n": _b64(as_bytes(numbers.n)), "e": _b64(as_bytes(numbers.e))}


def _rs256(key, kid, claims):
    header = _b64(json.dumps({"alg": "RS256", "typ": "JWT", "kid": kid}).encode())
    payload = _b64(json.dumps(claims).encode())
    signed = f"{header}.{payload}".encode()
    signature = key.sign(signed, padding.PKCS1v15(), hashes.SHA256())
    return f"{header}.{payload}.{_b64(signature)}"


@pytest.fixture(scope="module")
def idp(pki):
    """An HTTPS server publishing one RSA key as a JWKS; yields the key and the JWKS URL."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = json.dumps({"keys": [_jwk(key, "rsa-1")]}).encode()

    class Jwks(BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(document)))
            self.end_headers()
            self.wfile.write(document)

        def log_message(self, *args):
            pass

    files = pathlib.Path(tempfile.mkdtemp(prefix="warrant-idp-"))
    (files / "server.pem").write_bytes(pki["server"])
    (files / "server_key.pem").write_bytes(pki["server_key"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(files / "server.pem", files / "server_key.pem")
    server = ThreadingHTTPServer(("127.0.0.1", 0), Jwks)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield key, f"https://127.0.0.1:{server.server_address[1]}/.well-known/jwks.json"
    finally:
        server.shutdown()


def test_an_rs256_token_from_a_jwks_over_https_is_verified(stubs, pki, idp):
    pb, pb_grpc = stubs
    key, url = idp
    files = pathlib.Path(tempfile.mkdtemp(prefix="warrant-credentials-"))
    (files / "ca.pem").write_bytes(pki["ca"])
    (files / "warrant.toml").write_text(
        "[[credentials.issuers]]\n"
        f'issuer = "{ISSUER}"\njwks_url = "{url}"\njwks_ca = "{files / "ca.pem"}"\n'
        'audiences = ["warrant"]\nalgorithms = ["RS256"]\nprincipal = "ApiKey::{sub}"\n')
    claims = {"iss": ISSUER, "sub": "pipeline-etl", "aud": "warrant",
              "exp": int(time.time()) + 300, "jti": "python-1"}

    def check(stub, token):
        return stub.Check(pb.CheckRequest(
            principal=pb.EntityRef(type="ApiKey", id="pipeline-etl"),
            action="read",
            resource=pb.EntityRef(type="Dataset", id="sales-2026"),
            credential=token,
        ), timeout=5)

    with running_server("--config", str(files / "warrant.toml")) as addresses:
        with grpc.insecure_channel(addresses["check"]) as channel:
            stub = pb_grpc.AuthorizerStub(channel)
            answer = check(stub, _rs256(key, "rsa-1", claims))
            assert answer.decision == pb.DECISION_ALLOW, list(answer.reasons)

            forger = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            answer = check(stub, _rs256(forger, "rsa-1", claims))
            assert answer.decision == pb.DECISION_DENY
            assert list(answer.reasons) == ["warrant:credential-bad-signature"]
