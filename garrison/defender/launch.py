"""`defender app-embedded PROGRAM ARGS...`: identity, policy, start-up report, supervised launch.

Exit codes (documented in docs/defender.md):
  the app's own status (128+N when a signal N killed it), else
  64  usage: no program given
  69  no policy: the console is unreachable and no cached policy exists (and no fail-open)
  78  configuration: missing/garbled INSTALL_BUNDLE, corrupt cached policy or policy file
  125 the defender cannot enforce (seccomp unavailable, filter refused) and fail-open is off
  126 the policy refused to start the program, or it is not executable
  127 program not found
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
import shutil
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from garrison.defender.baseline import Baseline, LazyBaseline
from garrison.defender.context import DefenderContext
from garrison.defender.dataplane import choose as choose_dataplane
from garrison.defender.dataplane.tables import landlock_ports
from garrison.defender.forensics import ForensicRing, open_private
from garrison.defender.notify import Handler
from garrison.defender.process_controls import ProcessControls
from garrison.defender.proctree import nproc_limit, user_tasks
from garrison.defender.profile import ProfileRecorder, ProfileReporter, app_routes, instance_addresses
from garrison.defender.supervisor import LaunchPlan, SpawnError, Supervisor
from garrison.kernel._libc import release_free_heap
from garrison.kernel.features import KernelFeatures, probe
from garrison.policy.audit import AuditEvent
from garrison.policy.model import Rule, RuntimePolicy
from garrison.policy.scope import Identity

log = logging.getLogger("garrison.defender")

EX_USAGE = 64
EX_NOPOLICY = 69
EX_CONFIG = 78
EX_CANNOT_ENFORCE = 125
EX_REFUSED = 126
EX_NOTFOUND = 127

AUDIT_LOG = "garrison-audit.jsonl"
CF_DROPLET_DIRS = ("/home/vcap/app", "/home/vcap/deps")
APP_ENV_STRIP = frozenset({"INSTALL_BUNDLE"})
FORENSICS = "garrison-forensics"


class LaunchError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code


@dataclass
class Options:
    policy_file: str | None = None
    fail_open: bool = False
    connect_timeout: float = 10.0
    trap_forks: bool = True
    quiet: bool = False


def dns_upstreams(env: dict[str, str]) -> list[tuple[str, int]] | None:
    """DEFENDER_DNS_UPSTREAMS="host:port,[v6]:port": the resolvers the defender's DNS proxy forwards
    to (default: /etc/resolv.conf's). A bad entry is a configuration error."""
    spec = env.get("DEFENDER_DNS_UPSTREAMS", "").strip()
    if not spec:
        return None
    out: list[tuple[str, int]] = []
    for part in spec.split(","):
        part = part.strip()
        host, _, port = (
            part.rpartition(":") if part.count(":") == 1 or part.startswith("[") else (part, "", "53")
        )
        host = host.strip("[]")
        try:
            ipaddress.ip_address(host)
            if not 0 < int(port) < 65536:
                raise ValueError(port)
            out.append((host, int(port)))
        except ValueError:
            raise LaunchError(EX_CONFIG, f"DEFENDER_DNS_UPSTREAMS: {part!r} is not IP:PORT") from None
    return out


def say(msg: str) -> None:
    print(f"garrison defender: {msg}", file=sys.stderr, flush=True)


def load_policy_file(path: str) -> RuntimePolicy:
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise LaunchError(EX_CONFIG, f"cannot read policy file {path}: {exc.strerror}") from None
    try:
        if path.endswith((".yaml", ".yml")):
            import yaml

            data: Any = yaml.safe_load(text)
        else:
            data = json.loads(text)
        if isinstance(data, list):
            data = {"rules": data}
        return RuntimePolicy.model_validate(data)
    except Exception as exc:
        raise LaunchError(EX_CONFIG, f"policy file {path} is invalid: {exc}") from None


def identity_from_env(env: dict[str, str], features: KernelFeatures) -> tuple[Identity, Any]:
    from garrison.channel.identity import hello_from_env

    hello = hello_from_env(env, kernel={**features.as_dict(), "weaker": features.weaker_guarantees()})
    ident = Identity(
        app_id=hello.app_id,
        app_name=hello.app_name,
        org=hello.org,
        space=hello.space,
        app_guid=hello.app_guid,
        instance=hello.instance,
    )
    return ident, hello


def startup_report(features: KernelFeatures, rule: Rule | None, guarantees: list[str]) -> list[str]:
    have = [
        f"kernel {features.kernel} {features.arch}",
        f"seccomp notify {'yes' if features.seccomp_user_notif else 'NO'}",
        f"landlock ABI {features.landlock_abi or 'unavailable'}",
        f"pidfd_getfd {'yes' if features.pidfd_getfd else 'no'}",
        f"process_vm_readv {'yes' if features.process_vm_readv else 'no (/proc/pid/mem)'}",
        f"memfd noexec seal {'yes' if features.memfd_noexec_seal else 'no'}",
        f"wait-killable {'yes' if features.wait_killable_recv else 'no'}",
        f"sync wake-up {'yes' if features.sync_wakeup else 'no'}",
    ]
    lines = ["kernel features: " + ", ".join(have)]
    lines.append(f"rule: {rule.name if rule else '(none matches: monitoring only)'}")
    for g in [*features.weaker_guarantees(), *guarantees]:
        lines.append(f"weaker: {g}" if is_weaker(g) else g)
    return lines


_FULL_STRENGTH = ("exec checks: ptrace exec stop", "network checks: emulated", "data plane: ")


def is_weaker(guarantee: str) -> bool:
    """Start-up notes are either the mechanism in use at full strength or a guarantee weakened here."""
    return not guarantee.startswith(_FULL_STRENGTH)


class AppEmbeddedDefender:
    """One defender run; `run()` returns the exit status."""

    def __init__(self, argv: list[str], env: dict[str, str], opts: Options) -> None:
        self.argv = argv
        self.env = env
        self.opts = opts
        self.data = Path(env.get("DATA_FOLDER") or "/tmp")
        self.client: Any = None
        self.ctx: DefenderContext | None = None
        self.guard: Any = None
        self.cnaf: Any = None
        self.sup: Supervisor | None = None
        self.reporter: ProfileReporter | None = None
        self._audit_lock = threading.Lock()
        self._audit_file: Any = None
        self._droplet_changed = ""  # set when the unpacked droplet differs from what staging scanned

    # ---- policy --------------------------------------------------------------------------------
    def _policy(self, ctx: DefenderContext, hello: Any) -> RuntimePolicy | None:
        if self.opts.policy_file:
            return load_policy_file(self.opts.policy_file)
        from garrison.channel.bundle import BundleError, decode_bundle
        from garrison.channel.client import DefenderChannelClient
        from garrison.channel.policy_cache import ForeignPolicyCache, PolicyCacheError

        try:
            bundle = decode_bundle(self.env.get("INSTALL_BUNDLE"))
        except BundleError as exc:
            raise LaunchError(EX_CONFIG, str(exc)) from None

        def on_policy(_rev: int, policy: RuntimePolicy) -> None:
            self._apply(policy)

        self.client = DefenderChannelClient(
            bundle, self.data, hello, on_policy=None, on_command=self._command
        )
        if self.client.identity_note:  # the client logged it (one WARNING line on stderr)
            self._startup_audit("identity.foreign", self.client.identity_note)
        got = threading.Event()
        first: list[RuntimePolicy] = []

        def first_policy(rev: int, policy: RuntimePolicy) -> None:
            if not got.is_set():
                first.append(policy)
                got.set()
                self.client.on_policy = on_policy
            else:
                on_policy(rev, policy)

        self.client.on_policy = first_policy
        self.client.start()
        if got.wait(self.opts.connect_timeout):
            return first[0]
        why = self.client.unreachable_reason()
        self.client.on_policy = on_policy  # a late policy still applies live
        got.set()
        try:
            cached = self.client.cached_policy()
        except PolicyCacheError as exc:
            raise LaunchError(EX_CONFIG, f"console unreachable ({why}) and {exc}") from None
        except ForeignPolicyCache as exc:
            say(str(exc))
            cached = None
        if cached is not None:
            say(f"console unreachable ({why}): starting on the cached policy (revision {cached.revision})")
            return cached
        if self.opts.fail_open:
            msg = f"console unreachable ({why}) and no usable cached policy: FAIL-OPEN, starting with no rule"
            say(msg)
            self._startup_audit("policy.fail_open", msg)
            return None
        msg = (
            f"console unreachable ({why}) and no usable cached policy in {self.data}: FAIL-CLOSED, "
            "refusing to start"
        )
        self._startup_audit("policy.fail_closed", msg, refused=True)
        self._shutdown()
        raise LaunchError(EX_NOPOLICY, msg)

    def _startup_audit(self, control: str, message: str, *, refused: bool = False) -> None:
        """A start-up decision about identity or policy, for the operator: kept in the local audit log
        (the console may be unreachable or another one) and spooled for the current console."""
        ev = AuditEvent(
            type="defender",
            effect="prevent" if refused else "alert",
            severity="high",
            control=control,
            argv=self.argv[:256],
            message=message[:4000],
        )
        if self.ctx is not None:
            ident = self.ctx.identity
            ev = ev.model_copy(
                update={
                    "defender_id": (self.client.defender_id if self.client else "") or self.ctx.defender_id,
                    "app_id": ident.app_id or ident.app_guid,
                    "app_name": ident.app_name,
                    "org": ident.org,
                    "space": ident.space,
                    "instance": ident.instance,
                }
            )
        self._local_audit(ev)
        if self.client is not None:
            self.client.submit(ev)

    def _droplet(self, hello: Any) -> None:
        """Make the gate ask about the droplet that will run: recompute its content digest from the
        unpacked droplet (`$GARRISON_DROPLET_ROOT`, else `$HOME`: app/ and deps/) instead of trusting
        GARRISON_DROPLET_DIGEST, which only says that the Garrison buildpack staged it. Computed when
        the buildpack's claim is present (or GARRISON_DROPLET_VERIFY=1); GARRISON_DROPLET_VERIFY=0
        trusts the claim."""
        claim = getattr(hello, "droplet_digest", "")
        verify = self.env.get("GARRISON_DROPLET_VERIFY", "")
        if verify == "0" or not (claim or verify == "1"):
            return
        from garrison.scan.identity import collect_droplet_dir, is_droplet_dir
        from garrison.scan.source import ScanRefused

        root = Path(self.env.get("GARRISON_DROPLET_ROOT") or self.env.get("HOME") or "/home/vcap")
        if not is_droplet_dir(root):
            return
        try:
            content = collect_droplet_dir(root)
        except ScanRefused as exc:
            say(f"cannot compute the droplet digest ({exc}): asking about the staged digest {claim}")
            return
        actual = content.digest()
        staged = content.identity()
        if claim and actual != claim:
            if staged is not None and staged.phase == "finalize":
                self._droplet_changed = (
                    f"droplet content {actual} differs from the {claim} scanned at the end of staging"
                )
            say(f"droplet content digest {actual} (staging recorded {claim}): asking about what will run")
        hello.droplet_digest = actual

    def _gate(self, hello: Any) -> None:
        """The run-time gate (issue 5): the console answered the droplet's assurance verdict with the first
        policy snapshot; a failed verdict under a `prevent` runtime effect keeps the droplet from running."""
        digest = getattr(hello, "droplet_digest", "")
        if not digest or self.client is None or self.ctx is None:
            return
        from garrison.scan.gate import decide
        from garrison.scan.model import VerdictResponse

        if self._droplet_changed:
            self.ctx.audit(
                AuditEvent(
                    type="assurance",
                    effect="alert",
                    severity="high",
                    control="assurance.droplet_changed",
                    argv=self.argv[:256],
                    message=self._droplet_changed,
                    extra={"digest": digest},
                )
            )
        v = self.client.verdict
        if v is None:
            say(f"no assurance verdict for droplet {digest} (console offline or no scanner): starting")
            return
        d = decide(VerdictResponse(digest=v.digest, verdict=v.verdict, effect=v.effect, reasons=v.reasons))
        if d.verdict == "fail" or not d.allow:
            self.ctx.audit(
                AuditEvent(
                    type="assurance",
                    effect="alert" if d.allow else "prevent",
                    severity="high",
                    control="assurance.runtime_gate",
                    argv=self.argv[:256],
                    message=d.reason,
                    extra={"digest": digest, "verdict": d.verdict},
                )
            )
        if not d.allow:
            self._shutdown()
            raise LaunchError(EX_REFUSED, f"refusing to start: {d.reason}")

    def _apply(self, policy: RuntimePolicy) -> None:
        ctx = self.ctx
        if ctx is None:
            return
        rule = ctx.set_policy(policy)
        ctx.audit(
            AuditEvent(
                type="defender",
                effect="info",
                severity="low",
                control="policy",
                message=f"policy revision {policy.revision} applied; rule {rule.name if rule else '(none)'}",
            )
        )

    def _command(self, name: str, args: dict[str, Any]) -> Any:
        assert self.ctx is not None
        if name in ("upload_forensics", "forensics"):
            limit = int(args.get("max_bytes", 4 << 20))
            return {"records": self.ctx.forensics.snapshot(limit)}
        if name == "status":
            sup = self.sup
            if sup is None:
                return {"app_pid": 0, "notifications": 0}
            out: dict[str, Any] = {"app_pid": sup.app_pid, "notifications": sup.notifications}
            out["dataplane"] = sup.dataplane
            if sup.native is not None:
                out["native"] = sup.native.stats()
            return out
        raise ValueError(f"unknown command {name!r}")

    def _exit_counters(self) -> dict[str, Any]:
        sup = self.sup
        assert sup is not None
        out: dict[str, Any] = {"notifications": sup.notifications}
        if sup.native is not None:
            out["native"] = sup.native.stats()
        elif sup.tracer is not None:
            out["stops"] = sup.tracer.stops
        return out

    def _local_audit(self, event: AuditEvent) -> None:
        with self._audit_lock:
            if self._audit_file is None:
                self._audit_file = open_private(self.data / AUDIT_LOG)
            self._audit_file.write(event.model_dump_json() + "\n")
            self._audit_file.flush()

    def _submit(self, event: AuditEvent) -> None:
        self.client.submit(event)

    # ---- run -----------------------------------------------------------------------------------
    def run(self) -> int:
        if not self.argv:
            raise LaunchError(EX_USAGE, "no program given: defender app-embedded PROGRAM [ARGS...]")
        try:
            self.data.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise LaunchError(EX_CONFIG, f"DATA_FOLDER {self.data} is unusable: {exc.strerror}") from None
        features = probe()
        ident, hello = identity_from_env(self.env, features)
        self._droplet(hello)
        forensics = ForensicRing(self.data, name=FORENSICS)
        ctx = DefenderContext(ident, hello.defender_id or "local", features, forensics)
        self.ctx = ctx
        policy = self._policy(ctx, hello)
        if self.client is not None:
            ctx.defender_id = self.client.defender_id or ctx.defender_id
            ctx.sinks.append(self._submit)
            ctx.profile = ProfileRecorder()  # learning reports need a console to go to
        else:
            ctx.sinks.append(self._local_audit)
        rule = ctx.set_policy(policy) if policy is not None else None
        self._gate(hello)

        exe = shutil.which(self.argv[0], path=self.env.get("PATH", os.defpath))
        if exe is None:
            raise LaunchError(EX_NOTFOUND, f"program not found: {self.argv[0]}")
        exe = os.path.abspath(exe)
        cwd = os.getcwd()
        app_dirs = [cwd]
        if not os.path.realpath(exe).startswith(("/usr/", "/bin/", "/sbin/", "/lib")):
            app_dirs.append(os.path.dirname(os.path.realpath(exe)))
        # the droplet: app code plus buildpack-supplied runtimes (CF puts those under deps/)
        app_dirs += [d for d in CF_DROPLET_DIRS if os.path.isdir(d)]
        app_dirs += [d for d in self.env.get("DEFENDER_APP_DIRS", "").split(":") if d]
        pc = rule.processes if rule else None
        drift_now = bool(pc and pc.drift_prevention and pc.effect != "disable")
        lazy = LazyBaseline(app_dirs, background=not drift_now)
        baseline = lazy.get() if drift_now else Baseline(system_roots=[])

        nproc = None
        guarantees: list[str] = []
        if pc and pc.fork_bomb_guard and pc.effect == "prevent":
            if os.getuid() == 0:
                guarantees.append(
                    "running as root: RLIMIT_NPROC does not bind; max_procs is enforced by the supervisor's "
                    "count of the app tree alone"
                )
            else:
                nproc = nproc_limit(user_tasks(os.getuid()), pc.fork_bomb_guard.max_procs)
        procs = ProcessControls(ctx, lazy, nproc_limit=nproc)
        handlers: dict[str, Handler] = dict(procs.handlers)
        only_nonzero: dict[str, int] = {}
        # the enrolment credential is the defender's, not the app's
        app_env = {k: v for k, v in self.env.items() if k not in APP_ENV_STRIP}
        try:
            from garrison.defender import net
        except ImportError as exc:
            guarantees.append(f"network controls unavailable: {exc}")
            net = None  # type: ignore[assignment]
        if net is not None:
            self.guard = net.NetworkGuard(ctx, upstreams=dns_upstreams(self.env))
            if ctx.profile is not None:
                ctx.profile.names_for = self.guard.pins.names_for
            handlers.update(self.guard.handlers)
            only_nonzero = dict(getattr(net, "TRAP_ONLY_IF_ARG_NONZERO", {}))
            for name in net.TRAPPED_SYSCALLS:
                if name not in handlers:
                    guarantees.append(f"network guard traps {name} but has no handler")
        use_landlock = bool(
            pc and pc.drift_prevention and pc.effect == "prevent" and features.landlock_abi > 0
        )
        if pc and pc.drift_prevention and not use_landlock:
            guarantees.append(
                "drift prevention without Landlock: exec checks only (racy against a second thread)"
            )
        if baseline.truncated:
            guarantees.append("drift baseline truncated: too many files in the app directories")
        plan = LaunchPlan(
            exe=exe,
            argv=self.argv,
            env=app_env,
            landlock_dirs=baseline.system_roots,
            landlock_files=baseline.paths,
            use_landlock=use_landlock,
            nproc_limit=nproc,
            trap_forks=self.opts.trap_forks,
        )
        want_ptrace = self.env.get("DEFENDER_PTRACE", "")
        # A racing thread can swap the exec path after the seccomp check (measured: 25/1000 runs of a
        # deny-listed binary). Landlock closes that for drift; deny/allow lists need the exec stop.
        lists_prevent = bool(pc and pc.effect == "prevent" and (pc.deny or pc.allow))
        if want_ptrace == "1" or (want_ptrace != "0" and (features.landlock_abi == 0 or lists_prevent)):
            if features.ptrace:
                plan.post_exec_check = procs.check_exec_stop
                plan.on_traced_fork = procs.record_child
                guarantees.append(
                    "exec checks: ptrace exec stop (race-free; +1 context switch per fork/exec)"
                )
            else:
                guarantees.append(
                    "ptrace blocked too: exec checks are CONTINUE-based (a racing thread can win)"
                )
        self._landlock_ports(rule, plan, features, guarantees)
        self._start_cnaf(rule, plan)
        if self.guard is not None:
            self.guard.start()
            guarantees.append(f"network checks: {self.guard.guarantee}")
        dataplane, dataplane_line = choose_dataplane(self.env)
        guarantees.append(dataplane_line)
        if not self.opts.quiet:
            for line in startup_report(features, rule, guarantees):
                say(line)
        self.sup = Supervisor(
            ctx, handlers, only_if_arg_nonzero=only_nonzero, dataplane=dataplane, guard=self.guard
        )
        try:
            if features.arch != "x86_64" or not features.seccomp_user_notif:
                raise OSError(
                    f"this host offers no seccomp user notification on x86_64 (arch {features.arch}, "
                    f"user notification {'yes' if features.seccomp_user_notif else 'no'})"
                )
            pid = self.sup.start(plan)
        except SpawnError as exc:
            self._shutdown()
            code = EX_NOTFOUND if exc.errno == 2 else EX_REFUSED
            raise LaunchError(code, f"cannot start {self.argv[0]}: {exc}") from None
        except OSError as exc:
            fail_open = self.opts.fail_open or bool(rule and rule.fail_open)
            self._shutdown()
            if fail_open:
                say(f"cannot enforce ({exc}): FAIL-OPEN, running {self.argv[0]} UNPROTECTED")
                os.execve(exe, self.argv, app_env)
            raise LaunchError(EX_CANNOT_ENFORCE, f"cannot enforce the policy: {exc}") from None
        ctx.audit(
            AuditEvent(
                type="defender",
                effect="info",
                severity="low",
                control="startup",
                pid=pid,
                exe=exe,
                argv=self.argv[:256],
                cwd=cwd,
                message="app started under the defender",
                extra={
                    "features": features.as_dict(),
                    "mechanisms": [g for g in guarantees if not is_weaker(g)],
                    "weaker": [g for g in features.weaker_guarantees() + guarantees if is_weaker(g)],
                    "defender_type": self.env.get("DEFENDER_TYPE", ""),
                    "dataplane": dataplane,
                },
            )
        )
        self._start_reporter(ctx)
        release_free_heap()
        stop = threading.Event()

        def flusher() -> None:
            while not stop.wait(1.0):
                forensics.flush()

        threading.Thread(target=flusher, name="garrison-flush", daemon=True).start()
        status = self.sup.wait()
        stop.set()
        procs.flush()
        ctx.audit(
            AuditEvent(
                type="defender",
                effect="info",
                severity="low",
                control="exit",
                pid=pid,
                message=f"app exited with status {status}",
                # notifications Python handled, what the native data plane answered itself, and the
                # ptrace stops the app waited for (Python's tracer; the native one counts its own)
                extra=self._exit_counters(),
            )
        )
        self._shutdown()
        return status

    def _landlock_ports(
        self, rule: Rule | None, plan: LaunchPlan, features: KernelFeatures, guarantees: list[str]
    ) -> None:
        """DEFENDER_LANDLOCK_PORTS=1: a rule that only allows TCP ports is enforced by Landlock (ABI 4+)
        and connect is not trapped at all. Opt-in, because refused connects then leave no audit and
        a later policy push cannot change what Landlock allows."""
        if self.env.get("DEFENDER_LANDLOCK_PORTS", "") != "1":
            return
        ports = landlock_ports(rule)
        if ports is None:
            guarantees.append("Landlock TCP ports not used: the rule restricts more than TCP ports")
        elif features.landlock_abi < 4:
            guarantees.append(
                f"Landlock TCP ports unavailable (ABI {features.landlock_abi} < 4): connects trapped"
            )
        else:
            plan.landlock_tcp_ports = ports
            guarantees.append(
                f"network checks: Landlock TCP connect ports ({len(ports)} allowed; in the kernel, connect not "
                "trapped, refused connects are not audited, later policy pushes cannot widen or narrow it)"
            )

    def _start_cnaf(self, rule: Rule | None, plan: LaunchPlan) -> None:
        if rule is None or rule.cnaf is None or not rule.cnaf.enabled or not self.env.get("PORT"):
            return
        from garrison.defender.cnaf_hook import start_cnaf

        assert self.ctx is not None
        try:
            port = int(self.env["PORT"])
            self.cnaf = start_cnaf(self.ctx, plan, port)
        except (ValueError, OSError) as exc:
            if self.opts.fail_open or rule.fail_open:
                say(f"CNAF cannot listen on PORT={self.env['PORT']} ({exc}): FAIL-OPEN, app serves directly")
                return
            raise LaunchError(
                EX_CANNOT_ENFORCE, f"CNAF cannot listen on PORT={self.env['PORT']}: {exc}"
            ) from None

    def _start_reporter(self, ctx: DefenderContext) -> None:
        if ctx.profile is None or self.client is None:
            return
        client = self.client
        self.reporter = ProfileReporter(
            ctx.profile,
            client.send_now,
            interval=max(0.2, float(self.env.get("DEFENDER_PROFILE_INTERVAL") or 60)),
            addresses=instance_addresses(self.env),
            routes=app_routes(self.env),
            connects=lambda: int(client.stats.get("connects", 0)),
        )
        self.reporter.start()

    def _shutdown(self) -> None:
        if self.sup is not None:
            try:
                self.sup.stop_dataplane()
            except Exception:
                log.exception("data plane stop")
        if self.cnaf is not None:
            self.cnaf.stop()
        if self.guard is not None:
            try:
                self.guard.stop()
            except Exception:
                log.exception("network guard stop")
        if self.reporter is not None:
            try:
                self.reporter.stop()  # the last counts, while the channel is still up
            except Exception:
                log.exception("profile reporter stop")
        if self.client is not None:
            self.client.wait_delivered(float(self.env.get("DEFENDER_DRAIN_TIMEOUT", "5")))
            self.client.stop()
        if self.ctx is not None:
            self.ctx.forensics.close()
        if self._audit_file is not None:
            self._audit_file.close()


def main(argv: list[str], opts: Options, env: dict[str, str] | None = None) -> int:
    logging.basicConfig(level=os.environ.get("DEFENDER_LOG_LEVEL", "WARNING"), stream=sys.stderr)
    d = AppEmbeddedDefender(argv, dict(os.environ if env is None else env), opts)
    try:
        return d.run()
    except LaunchError as exc:
        say(str(exc))
        return exc.code
    except KeyboardInterrupt:
        say("interrupted before the app started")
        return 130
