"""An agent's tools guarded by Warrant. Run the server on its defaults (`cargo run --release --
serve` at the repository's root, with the bundled policies), install the client
(`pip install ./clients/python`), then `python clients/python/examples/guarded_tool.py`.

The procurement agent may submit a vendor request only under its task approval TASK-77, and
only up to the amount the approval names; each attempt prints Warrant's decision and its ledger
id, which `warrant log show ID` (or `DecisionLog/GetDecision`) turns into the whole provenance.
"""

import os
import sys

from warrant_client import Client, Denied

warrant = Client(os.environ.get("WARRANT_ADDR", "127.0.0.1:50051"),
                 principal="Agent::procurement-agent", timeout=1.0)


@warrant.requires("submit_vendor_request", resource="Tool::vendor-portal",
                  approval=lambda ticket: ticket, context=["vendor", "amount"])
def submit_vendor_request(vendor: str, amount: int, ticket: str | None = None) -> str:
    return f"request for {vendor} ({amount}) submitted"


def main() -> int:
    attempts = [("Acme", 1200, "TASK-77"), ("Acme", 1200, None), ("Acme", 10_000_000, "TASK-77")]
    allowed = 0
    for vendor, amount, ticket in attempts:
        try:
            print("ALLOW", submit_vendor_request(vendor, amount, ticket=ticket))
            allowed += 1
        except Denied as denied:
            print("DENY ", denied.decision.describe())
    warrant.close()
    # The first is within the task approval; the other two are not.
    return 0 if allowed == 1 else 1


if __name__ == "__main__":
    sys.exit(main())
