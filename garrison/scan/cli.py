"""CLI commands of the scan component: `garrison scan`, `garrison db import|status`, `garrison buildpack`.

Exit codes of `garrison scan`: 0 = verdict pass, 1 = assurance policy failure, 2 = error (bad input,
refused archive, unreadable policy/indicators, console unreachable).
"""

from __future__ import annotations

import json
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeElapsedColumn

from garrison.scan.assurance import AssurancePolicy

_err = Console(stderr=True)


class Fmt(StrEnum):
    table = "table"
    json = "json"
    sarif = "sarif"
    cyclonedx = "cyclonedx"


def _fail(msg: str, code: int = 2) -> typer.Exit:
    _err.print(f"[bold red]error:[/] {msg}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _load_policy(path: Path) -> AssurancePolicy:
    from garrison.policy.files import PolicyFileError, load_model

    try:
        return load_model(path, AssurancePolicy)
    except PolicyFileError as exc:
        raise _fail(f"assurance policy {exc}") from exc


DbOpt = Annotated[
    Path | None,
    typer.Option("--db", help="Vulnerability DB directory (default $GARRISON_DB_DIR or ~/.garrison/vulndb)"),
]


def scan_command(
    path: Annotated[
        Path, typer.Argument(help="Droplet (tar/tar.gz), directory, jar, or host root with --host")
    ],
    host: Annotated[
        bool, typer.Option("--host", help="Scan a host root filesystem (skips /proc, /sys, ...)")
    ] = False,
    db: DbOpt = None,
    no_db: Annotated[bool, typer.Option("--no-db", help="Skip vulnerability matching")] = False,
    fmt: Annotated[Fmt, typer.Option("--format", "-f", help="Output format")] = Fmt.table,
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write the report here")] = None,
    policy_file: Annotated[
        Path | None, typer.Option("--policy", help="Assurance policy file (JSON/YAML)")
    ] = None,
    console_url: Annotated[
        str | None, typer.Option("--console", help="Console URL for the assurance policy")
    ] = None,
    report_to: Annotated[
        str | None, typer.Option("--report-to", help="Console URL to POST the report to")
    ] = None,
    user: Annotated[str | None, typer.Option("--user", "-u")] = None,
    password: Annotated[str | None, typer.Option("--password", "-p", envvar="GARRISON_PASSWORD")] = None,
    token: Annotated[str | None, typer.Option("--token", envvar="GARRISON_TOKEN")] = None,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert", help="Console CA certificate (PEM)")] = None,
    insecure: Annotated[
        bool, typer.Option("--insecure", help="Do not verify the console certificate")
    ] = False,
    app: Annotated[str, typer.Option("--app", help="Application name recorded in the report")] = "",
    hashes: Annotated[Path | None, typer.Option("--hashes", help="File of SHA-256 malware hashes")] = None,
    yara_dir: Annotated[Path | None, typer.Option("--yara", help="Directory of YARA rules")] = None,
    secrets: Annotated[
        bool, typer.Option("--secrets/--no-secrets", help="Secret detection (off for --host)")
    ] = True,
    secrets_in_deps: Annotated[
        bool, typer.Option("--secrets-in-deps", help="Also search site-packages, node_modules, vendor ...")
    ] = False,
    max_files: Annotated[int, typer.Option(help="Refuse archives with more entries")] = 200_000,
    max_bytes: Annotated[int, typer.Option(help="Refuse archives that expand past this")] = 8 << 30,
    max_file_bytes: Annotated[int, typer.Option(help="Skip content analysis of larger files")] = 256 << 20,
    max_ratio: Annotated[
        int, typer.Option(help="Refuse a compression ratio above this over any 256 MiB of output")
    ] = 200,
    max_seconds: Annotated[float, typer.Option(help="Refuse a scan that takes longer")] = 900.0,
) -> None:
    """Scan a droplet, directory or host for vulnerable packages, secrets and malware (offline)."""
    from garrison.scan.console import ConsoleConfig, ConsoleError, fetch_policy, post_report
    from garrison.scan.malware import IndicatorError, MalwareScanner, load_hashes, load_yara
    from garrison.scan.report import render
    from garrison.scan.report.table import print_table
    from garrison.scan.scanner import ScanOptions, ScanRefused, scan
    from garrison.scan.source import Limits
    from garrison.scan.vulndb.index import DB_FILE, SchemaError, default_db_dir

    db_dir = None if no_db else (db or default_db_dir())
    if db_dir is not None and not (db_dir / DB_FILE).exists():
        raise _fail(f"no vulnerability database in {db_dir}; run `garrison db import` or pass --no-db")
    try:
        mal = MalwareScanner(
            load_hashes(hashes) if hashes else None, load_yara(yara_dir) if yara_dir else None
        )
    except IndicatorError as exc:
        raise _fail(str(exc)) from exc
    creds = {"user": user, "password": password, "token": token, "ca_cert": str(ca_cert) if ca_cert else None}
    policy: AssurancePolicy | None = _load_policy(policy_file) if policy_file else None
    if policy is None and console_url:
        cfg = ConsoleConfig.from_env(console_url, **creds)
        assert cfg is not None
        cfg.insecure = insecure
        try:
            policy = fetch_policy(cfg)
        except ConsoleError as exc:
            raise _fail(str(exc)) from exc
    opts = ScanOptions(
        db_dir=db_dir,
        app_name=app,
        host=host,
        secrets=secrets and not host,
        secrets_in_deps=secrets_in_deps,
        malware=mal,
        limits=Limits(
            max_files=max_files,
            max_total_bytes=max_bytes,
            max_file_bytes=max_file_bytes,
            max_ratio=max_ratio,
            max_seconds=max_seconds,
        ),
        policy=policy or AssurancePolicy(),
    )
    show_progress = fmt == Fmt.table and _err.is_terminal and path.is_file() and path.stat().st_size > 8 << 20
    try:
        if show_progress:
            with Progress(
                TextColumn("scanning"), BarColumn(), DownloadColumn(), TimeElapsedColumn(), console=_err
            ) as prog:
                task = prog.add_task("scan", total=path.stat().st_size)
                opts.progress = lambda done, total: prog.update(task, completed=done)
                report = scan(path, opts)
        else:
            report = scan(path, opts)
    except (ScanRefused, OSError, SchemaError) as exc:
        raise _fail(str(exc)) from exc
    if fmt == Fmt.table and output is None:
        print_table(report, Console())
    else:
        text = render(report, fmt.value) if fmt != Fmt.table else report.model_dump_json(indent=2)
        if output:
            output.write_text(text)
        else:
            sys.stdout.write(text + "\n")
    if report_to:
        cfg = ConsoleConfig.from_env(report_to, **creds)
        assert cfg is not None
        cfg.insecure = insecure
        try:
            post_report(cfg, report)
        except ConsoleError as exc:
            raise _fail(f"report not delivered: {exc}") from exc
    raise typer.Exit(0 if report.verdict == "pass" else 1)


db_app = typer.Typer(help="Local OSV vulnerability database.", no_args_is_help=True)


@db_app.command("import")
def db_import(
    paths: Annotated[
        list[Path], typer.Argument(help="OSV JSON/YAML files, directories, osv.dev all.zip, RubySec YAML")
    ],
    db: DbOpt = None,
) -> None:
    """Import advisories into the local index (newest `modified` wins; withdrawn ones are removed)."""
    import time

    from garrison.scan.vulndb.index import VulnIndex, default_db_dir
    from garrison.scan.vulndb.load import LoadErrors, iter_advisories

    db_dir = db or default_db_dir()
    errors = LoadErrors()
    t0 = time.monotonic()
    with VulnIndex(db_dir, create=True) as ix:
        res = ix.import_advisories(iter_advisories(paths, errors), ", ".join(str(p) for p in paths))
        size = ix.path.stat().st_size
    typer.echo(
        f"imported {res.imported} advisories ({res.withdrawn} withdrawn, {res.skipped_older} older duplicates "
        f"skipped) into {db_dir} in {time.monotonic() - t0:.1f}s; index {size / 1e6:.1f} MB"
    )
    typer.echo(f"{'source':<28} {'read':>7} {'stored':>7} {'skipped':>8}")
    for label, c in sorted(res.sources.items()):
        typer.echo(f"{label:<28} {c.read:>7} {c.stored:>7} {sum(c.skipped.values()):>8}")
        for reason, n in sorted(c.skipped.items()):
            typer.echo(f"  skipped {n}: {reason}")
    if errors.errors:
        typer.echo(f"{'unreadable files':<28} {len(errors.errors):>7} {0:>7} {len(errors.errors):>8}")
    for e in errors.errors[:50]:
        _err.print(f"[yellow]skipped[/] {e}", highlight=False, soft_wrap=True)
    if errors.errors:
        raise _fail(f"{len(errors.errors)} files could not be imported (the rest were)")


@db_app.command("status")
def db_status(db: DbOpt = None, as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Show advisory counts per ecosystem, sources and last update time."""
    from garrison.scan.vulndb.index import SchemaError, VulnIndex, default_db_dir

    try:
        with VulnIndex(db or default_db_dir()) as ix:
            st = ix.status()
    except (FileNotFoundError, SchemaError) as exc:
        raise _fail(str(exc)) from exc
    if as_json:
        typer.echo(json.dumps(st, indent=2))
        return
    typer.echo(f"database   {st['path']} ({st['size_bytes'] / 1e6:.1f} MB)")
    typer.echo(f"updated    {st['updated_at']}")
    typer.echo(f"advisories {st['advisories']}")
    for eco, n in st["by_ecosystem"].items():
        typer.echo(f"  {eco:<12} {n}")


bp_app = typer.Typer(help="Cloud Foundry staging buildpack that scans apps.", no_args_is_help=True)


@bp_app.command("export")
def bp_export(
    dest: Annotated[Path, typer.Argument(help="Folder to create")],
    console_url: Annotated[str | None, typer.Option("--console")] = None,
    ca_cert: Annotated[Path | None, typer.Option("--ca-cert")] = None,
    user: Annotated[str | None, typer.Option("--user")] = None,
    token: Annotated[str | None, typer.Option("--token")] = None,
    policy_file: Annotated[Path | None, typer.Option("--policy")] = None,
    db: Annotated[Path | None, typer.Option("--db", help="Bundle this vulnerability DB")] = None,
    binary: Annotated[
        Path | None, typer.Option("--binary", help="Standalone garrison binary to vendor")
    ] = None,
    require_console: Annotated[bool, typer.Option("--require-console")] = False,
    make_zip: Annotated[bool, typer.Option("--zip", help="Also write DEST.zip")] = False,
) -> None:
    """Write a ready buildpack (bin/detect, bin/supply, bin/finalize, config, optional DB)."""
    from garrison.scan.buildpack.export import export
    from garrison.scan.vulndb.index import DB_FILE

    if db is not None and not (db / DB_FILE).exists():
        raise _fail(f"no vulnerability database in {db}")
    try:
        out = export(
            dest,
            console_url=console_url,
            ca_cert=ca_cert,
            user=user,
            token=token,
            policy=_load_policy(policy_file) if policy_file else None,
            db_dir=db,
            binary=binary,
            require_console=require_console,
            make_zip=make_zip,
        )
    except (FileExistsError, OSError) as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"buildpack written to {out}")


@bp_app.command("stage", hidden=True)
def bp_stage(
    phase: Annotated[str, typer.Option("--phase")],
    buildpack_dir: Annotated[Path, typer.Option("--buildpack-dir")],
    build_dir: Annotated[Path, typer.Option("--build-dir")],
    cache_dir: Annotated[Path | None, typer.Option("--cache-dir")] = None,
    deps_dir: Annotated[Path | None, typer.Option("--deps-dir")] = None,
    deps_idx: Annotated[str | None, typer.Option("--deps-idx")] = None,
    profile_dir: Annotated[Path | None, typer.Option("--profile-dir")] = None,
) -> None:
    """Run by bin/supply and bin/finalize inside CF staging."""
    from garrison.scan.buildpack.stage import run

    raise typer.Exit(
        run(
            phase=phase,
            buildpack_dir=buildpack_dir,
            build_dir=build_dir,
            deps_dir=deps_dir,
            deps_idx=deps_idx,
            cache_dir=cache_dir,
        )
    )


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""
    app.command("scan")(scan_command)
    app.add_typer(db_app, name="db")
    app.add_typer(bp_app, name="buildpack")
