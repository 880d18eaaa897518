"""OS command injection: a shell separator followed by a command with shell-like arguments.

Shell quoting tricks (`c'a't`, `c\\at`, `$IFS`, `${IFS}`) are undone first. A separator followed by
a known command only counts when what follows looks like a shell argument (a path, an option, a
variable, a redirection or nothing), so "salt; pepper" or "fish & chips; ping pong" pass.
"""

from __future__ import annotations

import re

from garrison.cnaf.fields import Field

_COMMANDS = (
    "cat|ls|id|whoami|uname|wget|curl|nc|ncat|netcat|bash|sh|zsh|dash|ksh|csh|tcsh|python[23]?|perl|"
    "ruby|php|nslookup|ping|sleep|echo|rm|chmod|chown|busybox|telnet|ifconfig|ipconfig|cmd|cmd\\.exe|"
    "powershell|pwsh|type|dir|systeminfo|tftp|base64|awk|sed|find|xargs|env|printenv|crontab|useradd|"
    "kill|sudo|su|mkfifo|socat|head|tail|more|less|hostname|passwd|shutdown|reboot|nohup|ps|netstat|"
    "lsof|cp|mv|touch|mkdir|tar|openssl|dig|host|scp|ssh|ftp|node|lua|certutil|bitsadmin|wmic|"
    "reg|cscript|wscript|mshta|rundll32|regsvr32|net|whoami\\.exe|expr|timeout|grep|od|xxd|tee|sort"
)
_SEP = r"(?:;|\|\|?|&&?|\n|\r|\$\(|\$\{IFS\}|%0a)"
_ARG = r"(?:\s*$|\s+-|\s+(?:https?|ftp|tftp)://|\s*[/$~<>|;&`\\]|\s+[-/.~$]|\s+[a-z]:\\|\s+\d[\d.]*(?:\s|$)|\s+[\w.-]+\.(?:sh|py|pl|txt|php|exe|bat)\b|\s+\w+\s*[<>|])"
_CHAIN = re.compile(
    rf"{_SEP}\s*(?:\w+=\S*\s+){{0,3}}(?:/(?:usr/)?(?:local/)?s?bin/)?['\"]?(?:{_COMMANDS})['\"]?(?:{_ARG})",
    re.I,
)
_START = re.compile(rf"\s*['\"]?(?:{_COMMANDS})['\"]?(?:{_ARG})", re.I)
# Programs that run a shell command or code given as an option (GTFOBins-style escapes):
# `gdb -ex '!whoami'`, `vim -c ':!id'`, `python -c '…'`, `perl -e`, `find … -exec`, `awk 'BEGIN{system(…)}'`.
_ESCAPE = re.compile(
    r"\b(?:gdb|vim?|ex|view|less|more|man|mysql|sqlite3|ftp|ed)\b[^\n]{0,40}?"
    r"(?:-ex|-c|--eval-command|-e|--command)(?:\s+|=)['\"]?\s*:?\s*!|"
    r"\b(?:python[23]?|perl|ruby|php|node|lua|tclsh|jrunscript)\s+-[ecr]\s*['\"][^'\"]{0,200}?"
    r"\b(?:system|exec|popen|spawn|import|require|os\.|subprocess|child_process|socket|shell_exec|passthru|IO\.popen)|"
    r"\bfind\s+\S+.{0,80}?-exec\s+\S+|\bawk\s+['\"][^'\"]*\bsystem\s*\(",
    re.I,
)
_STRONG = re.compile(
    r"/bin/(?:ba|z|da|k)?sh\b|/dev/(?:tcp|udp)/|\bnc(?:at)?\s+(?:-\w+\s+)*-[ec]\s|"
    r"\bbash\s+-[ic]\b|\bsh\s+-c\s|\bpowershell(?:\.exe)?\s+-(?:e|enc|encodedcommand|c|command|nop)\b|"
    r"\bcmd(?:\.exe)?\s+/[ck]\s|\$\(\s*(?:" + _COMMANDS + r")\b|"
    # backtick substitution glued to a value (x`id`) or as the whole value; a backtick after a space
    # is Markdown inline code ("use `wget` to…"), not shell
    r"(?:(?<=[\w.;|&'\"={(])|^\s*)`(?:" + _COMMANDS + r")(?:\s+[^`\s]+){0,8}\s*`|"
    # process substitution `<(cmd)`, `>(tee log)`; `$SHELL -c`; globbed system paths (`/bin/ca?`,
    # `/et*/passwd`, `/ET*/*WD`): a shell expands them, no form field holds them
    r"(?:^|[\s;|&=])[<>]\(\s*(?:" + _COMMANDS + r")\b|\$\{?SHELL\}?\s+-c\b|\$\(\(|"
    # `alias x=curl`; a value that *starts* with a separator, then any program with an option, a
    # path or user@host (`;rmt --version`, `|ssh-copy-id user@server`)
    r"\balias\s+['\"]?\w+['\"]?=|^(?![^\n]*\|\s*$)\s*(?:;|\|\|?|&&)\s*['\"]?[a-z][\w.+-]*['\"]?\s+(?:--?[a-z]|/|\w+@\w)|"
    r"/(?:usr/)?s?bin/\w*[*?]|(?:^|[\s;|&=+])/\w{0,4}[*?]+[\w*?]*/[\w*?]+|"
    r"\b(?:wget|curl)\s+(?:-\S+\s+)*(?:https?|ftp)://\S+.*?(?:\||;|&&|-O|-o)",
    re.I,
)
_STRONG_TRIGGERS = (
    "/bin/",
    "/dev/",
    "nc",
    "bash",
    "sh ",
    "powershell",
    "cmd",
    "$(",
    "`",
    "wget",
    "curl",
    "(",
    "*",
    "?",
    "shell",
    "alias",
    ";",
    "|",
    "&",
)
_SEP_TRIGGERS = (";", "|", "&", "\n", "\r", "`", "$(", "${ifs}", "%0a")
_DEQUOTE = re.compile(r"(?<=\w)(?:''|\"\"|\\)(?=\w)|(?<=\w)['\"\\](?=\w)")
# expansions that are empty (or meaningless) inside a word: c$@at, c${x}at, ca$*t, c$-at, c$?at
_EMPTY_EXPANSION = re.compile(r"(?<=\w)(?:\$(?:@|\*|-|\?|\{\w{0,8}\}|\(\))|``)(?=[\w/\s])")
_IFS = re.compile(r"\$\{IFS\}|\$IFS(?:\$\d+)?\b|\{,|,\}", re.I)
_QUICK = re.compile(
    r"[;|&`$\n\r]|[<>]\(|/\w{0,4}[*?]|/bin/|/dev/|\b(?:powershell|cmd|nc|bash|sh)\b|\s-(?:ex|[ecr])\b|-exec\b|\bawk\b|\balias\s",
    re.I,
)


def normalize(value: str) -> str:
    """Undo shell quoting tricks: c'a't → cat, c\\at → cat, ${IFS} → space, c$@at → cat."""
    if "$" in value or "{" in value or "``" in value:
        value = _IFS.sub(" ", value)
        value = _EMPTY_EXPANSION.sub("", value)
    if "'" in value or '"' in value or "\\" in value:
        value = _DEQUOTE.sub("", value)
    return value


def detect(value: str, field: Field) -> str | None:
    if not _QUICK.search(value):
        return None
    v = normalize(value)
    low = v.lower()
    m = (
        # an evasion (pi``ng, c$@at) that spells a command at the start of the value
        (_START.match(v) if v != value and _EMPTY_EXPANSION.search(value) else None)
        or (_STRONG.search(v) if any(t in low for t in _STRONG_TRIGGERS) else None)
        or (_CHAIN.search(v) if any(t in low for t in _SEP_TRIGGERS) else None)
        or (_ESCAPE.search(v) if "-" in v or "awk" in low else None)
    )
    if m:
        return f"command injection near {m.group(0).strip()[:40]!r}"
    return None
