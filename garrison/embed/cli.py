"""CLI commands of the embed component: `garrison embed` and `garrison run-droplet`."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from garrison.embed import command as cmd
from garrison.embed.droplet import DropletError, embed_droplet, undo_droplet
from garrison.embed.manifest import (
    DefenderEnv,
    ManifestError,
    app_command,
    app_names,
    embed_text,
    rewrite_file,
    undo_text,
)
from garrison.embed.runner import RunSpec, free_port, run
from garrison.embed.safetar import UnsafeArchive
from garrison.embed.standalone import (
    BuildError,
    DefenderInfo,
    build_standalone,
    checkout_root,
    inspect_defender,
)

EXIT_BAD_INPUT = 2


def _fail(message: str, code: int = EXIT_BAD_INPUT) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code)


def default_defender_source() -> Path | None:
    """GARRISON_DEFENDER_DIST (tarball or dir) or this checkout's scripts/build-defender output."""
    env = os.environ.get("GARRISON_DEFENDER_DIST")
    candidates = [Path(env)] if env else []
    candidates.append(Path(__file__).resolve().parents[2] / "dist")
    for c in candidates:
        if c.is_file():
            return c
        tarball = c / "garrison_defender_app_embedded.tar.gz"
        if tarball.is_file():
            return tarball
    return None


def _inspect(source: Path) -> DefenderInfo:
    try:
        return inspect_defender(source)
    except (OSError, UnsafeArchive, DropletError) as e:
        raise _fail(f"{source}: not a usable defender: {e}") from e


def choose_defender(
    explicit: Path | None, fetched: Path | None, *, build: bool, launcher_ok: bool
) -> DefenderInfo:
    """The defender to embed: --defender as given; else a standalone build (the console's download, the
    local dist/, or built now in a Garrison checkout); the launcher only with --launcher or as a last
    resort (then announced loudly)."""
    if explicit is not None:
        return _inspect(explicit)
    candidates = [c for c in (fetched, default_defender_source()) if c is not None]
    infos = [_inspect(c) for c in dict.fromkeys(candidates)]
    for info in infos:
        if info.kind == "standalone" or (launcher_ok and info.kind == "launcher"):
            return info
    root = checkout_root()
    if build and not launcher_ok and root is not None:
        why = "the console serves only the launcher" if infos else "no standalone defender is built yet"
        typer.secho(f"embed: {why}; building the standalone defender (cached in dist/)", err=True, bold=True)
        try:
            return _inspect(build_standalone(root))
        except BuildError as e:
            raise _fail(f"{e}\n(pass --defender TARBALL, or --launcher to embed the launcher anyway)") from e
    if infos:
        return infos[0]
    hint = "run scripts/build-defender in a Garrison checkout" if root is None else "drop --no-build"
    raise _fail(f"no defender to embed: pass --defender or --console, or {hint}")


def announce(info: DefenderInfo, droplet: Path, manifest: Path | None) -> None:
    """Say loudly which defender went in and what it needs at run time (stderr)."""
    from rich.console import Console
    from rich.panel import Panel

    run_cmd = f"garrison run-droplet {droplet}" + (f" -m {manifest}" if manifest else "")
    body = (
        f"[bold]{info.summary()}[/]\nfrom {info.source}\n\n[bold]needs at run time:[/] {info.needs()}\n\n"
        f"try it here: {run_cmd}"
    )
    if info.kind == "launcher":
        body += (
            "\n\n[bold]for cf push[/], embed the standalone defender instead: run this command again in a "
            "Garrison checkout (it builds it), or run scripts/build-defender and pass --defender "
            "dist/garrison_defender_app_embedded.tar.gz"
        )
    style = {"standalone": "green", "launcher": "yellow", "custom": "cyan"}[info.kind]
    Console(stderr=True).print(Panel(body, title="defender embedded", border_style=style, expand=False))


def _read_value(value: str) -> str:
    """`@FILE` reads the value from a file (an install bundle is too long for a shell history)."""
    if value.startswith("@"):
        try:
            return Path(value[1:]).read_text(encoding="utf-8").strip()
        except OSError as e:
            raise _fail(f"cannot read {value[1:]}: {e.strerror}") from e
    return value.strip()


def _fetch_from_console(
    url: str, token: str | None, user: str | None, password: str | None, cacert: Path | None, dest: Path
) -> tuple[str, Path]:
    """Download the install bundle and the defender tarball from the console API."""
    import httpx

    auth: httpx.Auth | None = None
    headers = {}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    elif user is not None:
        auth = httpx.BasicAuth(user, password or "")
    verify: str | bool = str(cacert) if cacert else True
    base = url.rstrip("/")
    try:
        with httpx.Client(auth=auth, headers=headers, verify=verify, timeout=60) as client:
            r = client.get(f"{base}/api/v1/defenders/install-bundle")
            r.raise_for_status()
            bundle = str(r.json()["bundle"])
            tarball = dest / "garrison_defender_app_embedded.tar.gz"
            with client.stream("GET", f"{base}/api/v1/images/garrison_defender_app_embedded.tar.gz") as s:
                s.raise_for_status()
                with tarball.open("wb") as f:
                    for chunk in s.iter_bytes():
                        f.write(chunk)
    except (httpx.HTTPError, KeyError, ValueError) as e:
        raise _fail(f"could not fetch the bundle/defender from {base}: {e}") from e
    return bundle, tarball


def _ws_from_bundle(bundle: str) -> str:
    try:
        from garrison.channel.bundle import BundleError, decode_bundle
    except ImportError:  # pragma: no cover - channel component absent
        raise _fail("--ws-address is required") from None
    try:
        return decode_bundle(bundle).ws_address
    except BundleError as e:
        raise _fail(str(e)) from e


def register(app: typer.Typer) -> None:
    """Add this component's commands to the top-level `garrison` app."""

    @app.command()
    def embed(
        droplet: Annotated[
            Path | None, typer.Argument(help="Droplet tar.gz (app/, deps/, staging_info.yml).")
        ] = None,
        manifest: Annotated[
            Path | None, typer.Option("--manifest", "-m", help="manifest.yml to edit in place.")
        ] = None,
        output: Annotated[
            Path | None, typer.Option("--output", "-o", help="Write the droplet here (default: in place).")
        ] = None,
        undo: Annotated[
            bool, typer.Option("--undo", help="Remove the defender; restore the original command.")
        ] = False,
        app_name: Annotated[
            str | None, typer.Option("--app", help="Application in a multi-app manifest.")
        ] = None,
        defender: Annotated[
            Path | None, typer.Option("--defender", help="Defender tarball or built dist dir.")
        ] = None,
        install_bundle: Annotated[
            str | None, typer.Option("--install-bundle", help="Bundle text, or @FILE.")
        ] = None,
        ws_address: Annotated[
            str | None, typer.Option("--ws-address", help="wss://console:8084 (default: from the bundle).")
        ] = None,
        app_id: Annotated[
            str | None, typer.Option("--app-id", help="DEFENDER_APP_ID (default: app name).")
        ] = None,
        data_folder: Annotated[
            str, typer.Option("--data-folder", help="DATA_FOLDER for the defender.")
        ] = "/tmp",
        start_command: Annotated[
            str | None,
            typer.Option(
                "--command", help="Original start command, if neither droplet nor manifest has one."
            ),
        ] = None,
        defender_path: Annotated[
            str | None, typer.Option("--defender-path", help="Defender path in the start command.")
        ] = None,
        console: Annotated[
            str | None, typer.Option("--console", help="Console URL to fetch the bundle and defender from.")
        ] = None,
        token: Annotated[
            str | None, typer.Option("--token", envvar="GARRISON_TOKEN", help="Console API token.")
        ] = None,
        user: Annotated[str | None, typer.Option("--user", "-u", envvar="GARRISON_USER")] = None,
        password: Annotated[str | None, typer.Option("--password", "-p", envvar="GARRISON_PASSWORD")] = None,
        cacert: Annotated[Path | None, typer.Option("--cacert", help="Console CA certificate (PEM).")] = None,
        build: Annotated[
            bool,
            typer.Option(
                "--build/--no-build",
                help="Build the standalone defender when no standalone build is at hand (Garrison checkout; cached).",
            ),
        ] = True,
        launcher: Annotated[
            bool,
            typer.Option(
                "--launcher", help="Embed the launcher on purpose (the droplet ships the garrison package)."
            ),
        ] = False,
    ) -> None:
        """Embed the app-embedded defender into a droplet and/or a manifest.yml (or undo it)."""
        if droplet is None and manifest is None:
            raise _fail("give a droplet, a --manifest, or both")
        for p in (droplet, manifest):
            if p is not None and not p.is_file():
                raise _fail(f"{p}: no such file")
        if undo:
            _undo(droplet, manifest, output, app_name)
            return
        with tempfile.TemporaryDirectory(prefix="garrison-embed-") as tmp:
            fetched_tarball: Path | None = None
            if console:
                fetched_bundle, fetched_tarball = _fetch_from_console(
                    console, token, user, password, cacert, Path(tmp)
                )
                install_bundle = install_bundle or fetched_bundle
            droplet_command: str | None = None
            if droplet is not None:
                info = choose_defender(defender, fetched_tarball, build=build, launcher_ok=launcher)
                out = output or droplet
                try:
                    res = embed_droplet(
                        droplet,
                        out,
                        info.source,
                        command=start_command,
                        defender_path=defender_path or cmd.DEFAULT_DROPLET_PATH,
                    )
                except DropletError as e:
                    raise _fail(str(e)) from e
                droplet_command = res.original_command
                typer.echo(f"droplet: {out}")
                typer.echo(f"  start command: {res.start_command}")
                announce(info, out, manifest)
            if manifest is not None:
                _embed_manifest(
                    manifest,
                    app_name,
                    install_bundle,
                    ws_address,
                    app_id,
                    data_folder,
                    start_command if droplet is None else None,
                    defender_path or ("./defender" if droplet is None else cmd.DEFAULT_DROPLET_PATH),
                    droplet_command,
                )

    def _embed_manifest(
        manifest: Path,
        app_name: str | None,
        install_bundle: str | None,
        ws_address: str | None,
        app_id: str | None,
        data_folder: str,
        start_command: str | None,
        defender_path: str,
        droplet_command: str | None,
    ) -> None:
        if not install_bundle:
            raise _fail(
                "the manifest needs INSTALL_BUNDLE: pass --install-bundle (text or @FILE) or --console"
            )
        bundle = _read_value(install_bundle)
        ws = ws_address or _ws_from_bundle(bundle)
        text = manifest.read_text(encoding="utf-8")
        try:
            if droplet_command is None and start_command is None and app_command(text, app_name) is None:
                raise _fail(
                    "no start command to wrap: the manifest has no 'command:'; give --command "
                    "(or a droplet, whose start command is wrapped instead)"
                )
            new = embed_text(
                text,
                DefenderEnv(
                    ws_address=ws, install_bundle=bundle, app_id=app_id or "", data_folder=data_folder
                ),
                app=app_name,
                start_command=start_command,
                defender_path=defender_path,
            )
        except ManifestError as e:
            raise _fail(f"{manifest}: {e}") from e
        rewrite_file(manifest, new)
        names = app_names(new)
        typer.echo(f"manifest: {manifest} (app {app_name or names[0]}): defender env block added")

    def _undo(droplet: Path | None, manifest: Path | None, output: Path | None, app_name: str | None) -> None:
        if droplet is not None:
            out = output or droplet
            try:
                restored = undo_droplet(droplet, out)
            except DropletError as e:
                raise _fail(str(e)) from e
            typer.echo(f"droplet: {out}\n  start command restored: {restored}")
        if manifest is not None:
            try:
                new = undo_text(manifest.read_text(encoding="utf-8"), app=app_name)
            except ManifestError as e:
                raise _fail(f"{manifest}: {e}") from e
            rewrite_file(manifest, new)
            typer.echo(f"manifest: {manifest}: defender env block removed, command restored")

    @app.command("run-droplet")
    def run_droplet(
        droplet: Annotated[Path, typer.Argument(help="Droplet tar.gz to run.")],
        manifest: Annotated[
            Path | None, typer.Option("--manifest", "-m", help="Take env, command, memory from it.")
        ] = None,
        app_name: Annotated[
            str | None, typer.Option("--app", help="Application in the manifest (and its name).")
        ] = None,
        port: Annotated[int, typer.Option("--port", help="PORT for the app (0 = pick a free one).")] = 8080,
        env: Annotated[
            list[str] | None, typer.Option("--env", "-e", help="Extra KEY=VALUE (repeatable).")
        ] = None,
        start_command: Annotated[
            str | None, typer.Option("--command", "-c", help="Override the start command.")
        ] = None,
        workdir: Annotated[
            Path | None, typer.Option("--dir", help="Extract here (kept) instead of a temp dir.")
        ] = None,
        org: Annotated[str, typer.Option("--org")] = "local-org",
        space: Annotated[str, typer.Option("--space")] = "local-space",
        instance_index: Annotated[int, typer.Option("--instance-index")] = 0,
        memory_mb: Annotated[int, typer.Option("--memory-mb")] = 512,
        user: Annotated[
            str | None, typer.Option("--user", help="Run the app as this user, like CF's vcap (needs root).")
        ] = None,
    ) -> None:
        """Run a droplet locally like a Diego cell: CF env, profile.d, start command via bash."""
        if not droplet.is_file():
            raise _fail(f"{droplet}: no such file")
        spec = RunSpec(
            name=app_name or droplet.name.split(".")[0],
            org=org,
            space=space,
            instance_index=instance_index,
            port=port or free_port(),
            memory_mb=memory_mb,
            command=start_command,
            user=user,
        )
        if manifest is not None:
            _apply_manifest(spec, manifest, app_name)
        for item in env or []:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise _fail(f"--env wants KEY=VALUE, got {item!r}")
            spec.env[key] = value
        if workdir is not None and workdir.exists() and any(workdir.iterdir()):
            raise _fail(f"{workdir} is not empty")
        typer.echo(f"run-droplet: {spec.name} on PORT={spec.port}", err=True)
        try:
            rc = run(droplet, spec, workdir=workdir)
        except UnsafeArchive as e:
            raise _fail(f"refused: {e}") from e
        except (DropletError, ValueError) as e:
            raise _fail(str(e)) from e
        raise typer.Exit(rc)

    def _apply_manifest(spec: RunSpec, manifest: Path, app_name: str | None) -> None:
        from ruamel.yaml import YAML
        from ruamel.yaml.error import YAMLError

        try:
            doc = YAML(typ="safe").load(manifest.read_text(encoding="utf-8"))
            apps = [a for a in doc["applications"] if isinstance(a, dict)]
        except (OSError, YAMLError, TypeError, KeyError) as e:
            raise _fail(f"{manifest}: not a CF manifest: {e}") from e
        chosen = next((a for a in apps if app_name is None or a.get("name") == app_name), None)
        if chosen is None:
            raise _fail(f"{manifest}: no application {app_name!r}")
        spec.name = str(chosen.get("name") or spec.name)
        spec.env.update({str(k): str(v) for k, v in (chosen.get("env") or {}).items()})
        if chosen.get("command") not in (None, "null", "default") and spec.command is None:
            spec.command = str(chosen["command"])
        mem = str(chosen.get("memory", "")).upper().rstrip("B")
        if mem[:-1].isdigit() and mem[-1:] in ("M", "G"):
            spec.memory_mb = int(mem[:-1]) * (1024 if mem.endswith("G") else 1)
