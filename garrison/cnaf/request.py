"""What the firewall knows about one HTTP request: the proxy fills it, the engine inspects it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class HttpRequest:
    """One parsed request. Header names keep their wire spelling; `header()` looks up case-insensitively."""

    method: str
    target: str
    version: str = "1.1"
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    body_truncated: bool = False
    peer_ip: str = ""

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for k, v in self.headers:
            if k.lower() == lname:
                return v
        return None

    def header_values(self, name: str) -> list[str]:
        lname = name.lower()
        return [v for k, v in self.headers if k.lower() == lname]

    @property
    def path(self) -> str:
        return self.target.split("?", 1)[0]

    @property
    def query(self) -> str:
        return self.target.split("?", 1)[1] if "?" in self.target else ""

    @property
    def request_line(self) -> str:
        return f"{self.method} {self.target} HTTP/{self.version}"
