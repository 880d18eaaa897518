"""Web UI served by the console (owned by the UI component); the console mounts `router` at '/'."""

from fastapi import APIRouter

router = APIRouter()
