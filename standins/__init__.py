"""Loopback stand-ins of the platforms and tools the hub talks to, for tests, benchmarks and
`hub demo` (installed with the `[demo]` extra). Each models its service as documented, and
imports nothing of the hub: a stand-in that shared the hub's code would agree with its bugs.

The published documents the stand-ins answer from ship beside them; each stand-in takes its
folder or file as a constructor argument, these by default.
"""
from pathlib import Path

_HERE = Path(__file__).resolve().parent

# Klaviyo's OpenAPI documents, one per operation (contracts/README.md).
CONTRACTS = _HERE / "contracts" / "klaviyo"
# Stripe's published example objects (examples/README.md).
EXAMPLES = _HERE / "examples" / "stripe_resources.json"
