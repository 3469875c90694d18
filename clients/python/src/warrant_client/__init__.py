"""A Python client for Warrant that fails closed: a Check that times out, cannot reach the
server, is refused or gets an answer the client cannot read is a deny with its own
`warrant-client:*` reason, never an allow.

    from warrant_client import Client

    warrant = Client("127.0.0.1:50051", principal="Agent::procurement-agent")

    @warrant.requires("submit_vendor_request", resource="Tool::vendor-portal",
                      approval=lambda ticket: ticket, context=["vendor", "amount"])
    def submit(vendor: str, amount: int, ticket: str) -> str:
        ...

`submit(...)` runs only if Warrant allows it, and raises `Denied` (with the decision's reasons
and ledger id) otherwise.
"""

from warrant_client._decision import (
    MALFORMED_ANSWER, REFUSED, TIMEOUT, TRANSPORT_ERROR, UNAVAILABLE, ApprovalRequest,
    ApprovalRequired, Decision, Denied, SearchFailed, SearchResult,
)
from warrant_client.client import DEFAULT_TIMEOUT, AsyncClient, Client

__all__ = [
    "ApprovalRequest", "ApprovalRequired", "AsyncClient", "Client", "DEFAULT_TIMEOUT", "Decision", "Denied", "MALFORMED_ANSWER",
    "REFUSED", "SearchFailed", "SearchResult", "TIMEOUT", "TRANSPORT_ERROR", "UNAVAILABLE",
]
