"""Garrison: runtime protection for Cloud Foundry apps."""

__version__ = "0.1.0"
