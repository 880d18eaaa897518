"""What this kernel (and the container's own seccomp profile) lets the defender use."""

from __future__ import annotations

import platform
import re
from dataclasses import asdict, dataclass
from typing import Any

from garrison.kernel import landlock, memfd, pidfd, procmem, ptrace, seccomp


def _kernel_version() -> tuple[int, int]:
    m = re.match(r"(\d+)\.(\d+)", platform.release())
    return (int(m.group(1)), int(m.group(2))) if m else (0, 0)


@dataclass
class KernelFeatures:
    """Probed at start-up; the seccomp flags are confirmed when the filter is installed."""

    kernel: str = ""
    arch: str = ""
    seccomp_user_notif: bool = False  # 5.0
    notif_continue: bool = False  # 5.5
    notif_addfd: bool = False  # 5.9
    notif_addfd_send: bool = False  # 5.14
    wait_killable_recv: bool = False  # 5.19 (confirmed at install)
    sync_wakeup: bool = False  # 6.6 (confirmed at install)
    pidfd_open: bool = False  # 5.3
    pidfd_getfd: bool = False  # 5.6
    process_vm_readv: bool = False
    memfd_noexec_seal: bool = False  # 6.3
    landlock_abi: int = 0  # 5.13 (ABI 1); 0 = missing or blocked
    ptrace: bool = True  # exec fallback in Garden containers

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def weaker_guarantees(self) -> list[str]:
        """Human-readable consequences of what is missing (printed at start-up, sent in hello)."""
        out: list[str] = []
        if not self.seccomp_user_notif:
            out.append("no seccomp user notification: nothing can be enforced by the supervisor")
        if self.landlock_abi == 0:
            out.append(
                "Landlock unavailable: exec/drift prevention comes from the supervisor's exec check "
                "and the ptrace exec stop instead of the kernel's exec allow-set"
            )
        if not self.pidfd_getfd:
            out.append(
                "pidfd_getfd unavailable: connect/bind are emulated on a socket the defender installs "
                "over the app's (ADDFD); UDP sends are decided and continued (a racing thread may "
                "change their address after the check)"
            )
        if not self.process_vm_readv:
            out.append("process_vm_readv blocked: reading syscall arguments through /proc/<pid>/mem")
        if not self.memfd_noexec_seal:
            out.append("MFD_NOEXEC_SEAL missing: memfd exec is refused by the exec check only")
        if not self.wait_killable_recv:
            out.append(
                "WAIT_KILLABLE_RECV missing: a signal can restart a trapped syscall (duplicate audits)"
            )
        if self.arch != "x86_64":
            out.append(f"architecture {self.arch} is not supported: the filter is x86_64-only")
        return out


def probe() -> KernelFeatures:
    v = _kernel_version()
    po, pg = pidfd.available()
    notif = seccomp.action_available(seccomp.SECCOMP_RET_USER_NOTIF)
    return KernelFeatures(
        kernel=platform.release(),
        arch=platform.machine(),
        seccomp_user_notif=notif,
        notif_continue=notif and v >= (5, 5),
        notif_addfd=notif and v >= (5, 9),
        notif_addfd_send=notif and v >= (5, 14),
        wait_killable_recv=notif and v >= (5, 19),
        sync_wakeup=notif and v >= (6, 6),
        pidfd_open=po,
        pidfd_getfd=pg,
        process_vm_readv=procmem.vm_readv_available(),
        memfd_noexec_seal=memfd.noexec_seal_available(),
        landlock_abi=landlock.abi_version(),
        ptrace=ptrace.available(),
    )
