"""Thin FastAPI routers for /api/v1: parse, authorise, call a service, shape the answer."""
