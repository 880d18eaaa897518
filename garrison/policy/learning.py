"""The `learn` effect: which controls of a rule are learning, and the rule a defender enforces meanwhile.

A learning control records what the app does (executables, destinations, DNS names, listening
ports) so the console can build a profile and propose an allow-list. While it learns, its
allow-list is not enforced (that is what is being learned); its deny entries, bad-reputation list,
drift and fork-bomb guards still raise alerts but never block. Every decision point (defenders,
console) sees only the enforcing view, so no mechanism ever meets `learn` itself.
"""

from __future__ import annotations

import threading

from garrison.policy.model import ListeningControls, Rule

LEARNABLE = ("processes", "network", "listening", "dns")


def learning_controls(rule: Rule | None) -> frozenset[str]:
    """The controls of `rule` in learn mode (`listening` follows `network` unless it has its own)."""
    if rule is None:
        return frozenset()
    out = set()
    if rule.processes.effect == "learn":
        out.add("processes")
    if rule.network.effect == "learn":
        out.add("network")
    if listening_effect(rule) == "learn":
        out.add("listening")
    if rule.dns.effect == "learn":
        out.add("dns")
    return frozenset(out)


def listening_effect(rule: Rule) -> str:
    lc = rule.network.listening
    return lc.effect if lc.effect is not None else rule.network.effect


_VIEWS: dict[int, tuple[Rule, Rule]] = {}
_LEARNING_OF: dict[int, tuple[Rule, frozenset[str]]] = {}
_VIEWS_LOCK = threading.Lock()


def enforcing_view(rule: Rule) -> Rule:
    """`rule` with every learning control turned into alert-without-allow-list. The same object
    when nothing learns; one cached view per rule object (policies are replaced, never mutated),
    so identity checks on the selected rule keep working."""
    learning = learning_controls(rule)
    if not learning:
        return rule
    with _VIEWS_LOCK:
        hit = _VIEWS.get(id(rule))
        if hit is not None and hit[0] is rule:
            return hit[1]
    upd: dict[str, object] = {}
    if "processes" in learning:
        upd["processes"] = rule.processes.model_copy(update={"effect": "alert", "allow": []})
    net = rule.network
    lc = net.listening
    if "listening" in learning:
        lc = ListeningControls(effect="alert", allow=[], deny=lc.deny)
    elif lc.effect is None and net.effect == "learn":
        lc = lc.model_copy(update={"effect": "alert"})  # it followed network: it alerts with its lists
    if "network" in learning:
        outbound = net.outbound.model_copy(update={"allow": []})
        net = net.model_copy(update={"effect": "alert", "outbound": outbound, "listening": lc})
    elif lc is not net.listening:
        net = net.model_copy(update={"listening": lc})
    if net is not rule.network:
        upd["network"] = net
    if "dns" in learning:
        upd["dns"] = rule.dns.model_copy(update={"effect": "alert", "allow": []})
    view = rule.model_copy(update=upd)
    with _VIEWS_LOCK:
        if len(_VIEWS) >= 256:
            _VIEWS.clear()
            _LEARNING_OF.clear()
        _VIEWS[id(rule)] = (rule, view)
        _LEARNING_OF[id(view)] = (view, learning)
    return view


def view_learning(rule: Rule | None) -> frozenset[str]:
    """The controls that learn, for a rule made by `enforcing_view` (empty for any other rule). A
    learning network control is never "inert": its connects are decided (and so recorded) with
    their protocol, like the same rule in alert mode."""
    if rule is None:
        return frozenset()
    hit = _LEARNING_OF.get(id(rule))
    return hit[1] if hit is not None and hit[0] is rule else frozenset()
