"""One module per attack class; each exposes `detect(value, field) -> reason | None`."""
