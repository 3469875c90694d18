"""Cross-language mutual TLS: a Python grpcio client with a certificate from the client CA (a
SPIFFE ID in its URI SAN) is served over TLS and recorded by that identity; one without a
certificate is refused at the handshake. Certificates are made here with `cryptography`."""

import pathlib
import tempfile

import grpc
import pytest

from conftest import CALLER, running_server


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


def test_the_client_package_speaks_mutual_tls(pki, tls_server):
    from warrant_client import Client

    with Client(tls_server["check"], timeout=5, root_certificates=pki["ca"],
                certificate_chain=pki["client"], private_key=pki["client_key"],
                server_name="localhost") as client:
        decision = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026")
    assert decision.allowed, decision.describe()
    with Client(tls_server["check"], timeout=1, root_certificates=pki["ca"],
                server_name="localhost") as client:
        refused = client.check("ApiKey::pipeline-etl", "read", "Dataset::sales-2026")
    assert not refused and refused.reasons[0].startswith("warrant-client:")
