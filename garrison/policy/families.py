"""Well-known program families a process pattern can name as `@family` (e.g. `"deny": ["@shells"]`).

Pure data shared by the evaluator (names) and the defender (which also denies every installed member
by content, so a renamed copy is still a member). Names are basenames as distributions install them.
"""

from __future__ import annotations

_SHELLS = "sh dash bash rbash zsh ksh ksh93 mksh pdksh ash busybox csh tcsh fish yash posh"
_NETCAT = "nc ncat netcat nc.openbsd nc.traditional socat telnet cryptcat"
_DOWNLOADERS = "curl wget wget2 fetch aria2c lftp ftp tftp scp sftp"
_NETWORK_TOOLS = "nmap masscan zmap tcpdump tshark hping3 arping"

FAMILIES: dict[str, frozenset[str]] = {
    "shells": frozenset(_SHELLS.split()),
    "netcat": frozenset(_NETCAT.split()),
    "downloaders": frozenset(_DOWNLOADERS.split()),
    "network_tools": frozenset(_NETWORK_TOOLS.split()),
}


def family_of(pattern: str) -> frozenset[str] | None:
    """The member names when `pattern` is `@name` of a known family, else None."""
    if not pattern.startswith("@"):
        return None
    return FAMILIES.get(pattern[1:])
