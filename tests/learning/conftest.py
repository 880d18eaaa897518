"""The network guard tests' namespace (non-loopback addresses of the suite's own) for learning e2e."""

from tests.defender.net.conftest import netns  # noqa: F401 (a fixture, used by name)
