"""Network controls of the app-embedded defender: outbound, DNS, listening ports, port scans,
bad-reputation IPs. The supervisor traps `TRAPPED_SYSCALLS` and dispatches them to
`NetworkGuard(ctx).handlers`."""

from garrison.defender.net.guard import TRAP_ONLY_IF_ARG_NONZERO, TRAPPED_SYSCALLS, NetworkGuard

__all__ = ["TRAPPED_SYSCALLS", "TRAP_ONLY_IF_ARG_NONZERO", "NetworkGuard"]
