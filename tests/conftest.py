"""Suite-wide fixtures live in tests/fixtures/ (one module per component) and are loaded here."""

pytest_plugins = [
    "tests.fixtures.console",
]
