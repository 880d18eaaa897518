"""clone(2) flag bits the defender's filter and handlers look at (x86_64 ABI, by-value in arg0)."""

from __future__ import annotations

CLONE_VM = 0x00000100
CLONE_VFORK = 0x00004000
CLONE_PARENT = 0x00008000
CLONE_THREAD = 0x00010000
CLONE_PTRACE = 0x00002000
CLONE_UNTRACED = 0x00800000
CLONE_NEWPID = 0x20000000
