"""Inventory per ecosystem, from installed metadata and lock files, through a real directory scan."""

from __future__ import annotations

import json
from pathlib import Path

from garrison.scan.inventory.golang import read_buildinfo
from garrison.scan.scanner import ScanOptions, scan
from tests.scan.helpers import go_binary_inline, go_binary_legacy, go_modinfo, jar, pom, write_tree


def _pkgs(root: Path) -> set[tuple[str, str, str]]:
    report = scan(root, ScanOptions(secrets=False))
    return {(p.ecosystem, p.name, p.version) for p in report.packages}


def test_python_sources(tmp_path: Path) -> None:
    write_tree(
        tmp_path,
        {
            "site-packages/Flask-2.0.1.dist-info/METADATA": "Metadata-Version: 2.1\nName: Flask\nVersion: 2.0.1\n\nName: no\n",
            "site-packages/old.egg-info/PKG-INFO": "Metadata-Version: 1.0\nName: oldpkg\nVersion: 0.1\n",
            "requirements.txt": "# pinned\nrequests[socks]==2.19.0 ; python_version>'3'\nunpinned>=1\n-r other.txt\n",
            "requirements-dev.txt": "pytest===7.0.0 \\\n    --hash=sha256:abc\n",
            "requirements/prod.txt": "gunicorn==19.4.0\n",
            "Pipfile.lock": json.dumps(
                {"default": {"urllib3": {"version": "==1.24.1"}}, "develop": {"x": {"version": "*"}}}
            ),
            "poetry.lock": '[[package]]\nname = "jinja2"\nversion = "2.10"\n\n[[package]]\nname = "pyyaml"\nversion = "5.3"\n',
        },
    )
    assert _pkgs(tmp_path) == {
        ("PyPI", "Flask", "2.0.1"),
        ("PyPI", "oldpkg", "0.1"),
        ("PyPI", "requests", "2.19.0"),
        ("PyPI", "pytest", "7.0.0"),
        ("PyPI", "gunicorn", "19.4.0"),
        ("PyPI", "urllib3", "1.24.1"),
        ("PyPI", "jinja2", "2.10"),
        ("PyPI", "pyyaml", "5.3"),
    }


def test_node_sources(tmp_path: Path) -> None:
    v1 = {
        "lockfileVersion": 1,
        "dependencies": {"lodash": {"version": "4.17.4", "dependencies": {"minimist": {"version": "0.0.8"}}}},
    }
    v3 = {
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "app"},
            "node_modules/express": {"version": "4.17.1"},
            "node_modules/express/node_modules/qs": {"version": "6.7.0"},
            "node_modules/local": {"link": True},
        },
    }
    yarn_v1 = '# yarn lockfile v1\n\n"@babel/core@^7.0.0", "@babel/core@^7.1.0":\n  version "7.1.2"\n  resolved "x"\n\nleft-pad@1.3.0:\n  version "1.3.0"\n'
    berry = '__metadata:\n  version: 6\n\n"ms@npm:^2.0.0":\n  version: 2.0.0\n  resolution: "ms@npm:2.0.0"\n'
    write_tree(
        tmp_path,
        {
            "a/package-lock.json": json.dumps(v1),
            "b/package-lock.json": json.dumps(v3),
            "c/yarn.lock": yarn_v1,
            "d/yarn.lock": berry,
            "node_modules/minimist/package.json": json.dumps({"name": "minimist", "version": "1.2.0"}),
            "node_modules/@scope/pkg/package.json": json.dumps({"name": "@scope/pkg", "version": "0.1.0"}),
            "node_modules/minimist/test/package.json": json.dumps({"name": "fixture", "version": "9.9.9"}),
            "package.json": json.dumps({"name": "app", "version": "1.0.0"}),
        },
    )
    assert _pkgs(tmp_path) == {
        ("npm", "lodash", "4.17.4"),
        ("npm", "minimist", "0.0.8"),
        ("npm", "express", "4.17.1"),
        ("npm", "qs", "6.7.0"),
        ("npm", "@babel/core", "7.1.2"),
        ("npm", "left-pad", "1.3.0"),
        ("npm", "ms", "2.0.0"),
        ("npm", "minimist", "1.2.0"),
        ("npm", "@scope/pkg", "0.1.0"),
    }


def test_ruby_sources(tmp_path: Path) -> None:
    lock = (
        "GIT\n  remote: x\n  specs:\n    gitgem (0.1)\n\nGEM\n  remote: https://rubygems.org/\n  specs:\n"
        "    nokogiri (1.13.10-x86_64-linux)\n      racc (~> 1.4)\n    resque (2.2.0)\n\nPLATFORMS\n  ruby\n"
    )
    write_tree(
        tmp_path,
        {
            "Gemfile.lock": lock,
            "vendor/bundle/ruby/3.1.0/specifications/rack-2.0.1.gemspec": 's.name = "rack".freeze\ns.version = "2.0.1"\n',
            "vendor/bundle/ruby/3.1.0/specifications/multi-word-gem-1.2.3.gemspec": "# no fields\n",
            "myapp.gemspec": 's.name = "mine"\ns.version = "0.0.1"\n',
        },
    )
    assert _pkgs(tmp_path) == {
        ("RubyGems", "nokogiri", "1.13.10"),
        ("RubyGems", "resque", "2.2.0"),
        ("RubyGems", "rack", "2.0.1"),
        ("RubyGems", "multi-word-gem", "1.2.3"),
    }


def test_java_nested_jars_and_manifest_fallback(tmp_path: Path) -> None:
    inner = jar(pom("org.apache.logging.log4j", "log4j-core", "2.14.1"))
    manifest_only = jar(
        {
            "META-INF/MANIFEST.MF": b"Manifest-Version: 1.0\nBundle-SymbolicName: org.example.util;singleton:=true\nBundle-Version: 3.2.1\n"
        }
    )
    deep = jar({"lib/d2.jar": jar({"lib/d3.jar": jar({"lib/d4.jar": jar(pom("g", "too-deep", "1"))})})})
    boot = jar(
        {
            **pom("com.example", "app", "1.0.0"),
            "BOOT-INF/lib/log4j-core-2.14.1.jar": inner,
            "BOOT-INF/lib/util.jar": manifest_only,
            "BOOT-INF/lib/deep.jar": deep,
        }
    )
    write_tree(
        tmp_path,
        {
            "app.jar": boot,
            "exploded/WEB-INF/lib/jackson.jar": jar(
                pom("com.fasterxml.jackson.core", "jackson-databind", "2.9.10")
            ),
            "exploded/META-INF/maven/org.springframework/spring-core/pom.properties": "groupId=org.springframework\nartifactId=spring-core\nversion=5.3.17\n",
            "broken.jar": b"PK\x03\x04 not really",
        },
    )
    report = scan(tmp_path, ScanOptions(secrets=False))
    got = {(p.ecosystem, p.name, p.version) for p in report.packages}
    assert got == {
        ("Maven", "com.example:app", "1.0.0"),
        ("Maven", "org.apache.logging.log4j:log4j-core", "2.14.1"),
        ("Maven", "org.example:util", "3.2.1"),
        ("Maven", "com.fasterxml.jackson.core:jackson-databind", "2.9.10"),
        ("Maven", "org.springframework:spring-core", "5.3.17"),
    }
    log4j = next(p for p in report.packages if p.name.endswith("log4j-core"))
    assert log4j.locations[0].startswith("app.jar!/BOOT-INF/lib/log4j-core-2.14.1.jar!/META-INF/maven/")
    msgs = " ".join(n.message for n in report.notices)
    assert "nested deeper" in msgs and "not a readable jar" in msgs


def test_go_buildinfo_inline_and_legacy(tmp_path: Path) -> None:
    mod = go_modinfo(
        "example.com/app",
        [("golang.org/x/net", "v0.7.0"), ("github.com/old/lib", "v1.0.0")],
        replace={"github.com/old/lib": ("github.com/new/lib", "v1.2.0")},
    )
    assert read_buildinfo(go_binary_inline("go1.20.1", mod)) == ("go1.20.1", mod[16:-16])
    assert read_buildinfo(go_binary_legacy("go1.16.3", mod)) == ("go1.16.3", mod[16:-16])
    assert read_buildinfo(b"\x7fELF no go here") is None
    write_tree(
        tmp_path, {"bin/app": go_binary_inline("go1.20.1", mod), "bin/old": go_binary_legacy("go1.16.3", mod)}
    )
    assert _pkgs(tmp_path) == {
        ("Go", "stdlib", "1.20.1"),
        ("Go", "stdlib", "1.16.3"),
        ("Go", "golang.org/x/net", "v0.7.0"),
        ("Go", "github.com/new/lib", "v1.2.0"),
    }


def test_dpkg_status_source_packages(tmp_path: Path) -> None:
    status = (
        "Package: libssl3\nStatus: install ok installed\nSource: openssl\nVersion: 3.0.11-1~deb12u2\n\n"
        "Package: libc6\nStatus: install ok installed\nSource: glibc (2.36-9+deb12u4)\nVersion: 2.36-9+deb12u4\n\n"
        "Package: bash\nStatus: install ok installed\nVersion: 5.2.15-2+b2\n\n"
        "Package: gone\nStatus: deinstall ok config-files\nVersion: 1.0\n"
    )
    write_tree(tmp_path, {"var/lib/dpkg/status": status, "etc/os-release": 'ID=debian\nVERSION_ID="12"\n'})
    report = scan(tmp_path, ScanOptions(secrets=False, host=True))
    assert {(p.ecosystem, p.name, p.version) for p in report.packages} == {
        ("Debian:12", "openssl", "3.0.11-1~deb12u2"),
        ("Debian:12", "glibc", "2.36-9+deb12u4"),
        ("Debian:12", "bash", "5.2.15-2+b2"),
    }
    assert report.target_kind == "host"


def test_single_jar_target(tmp_path: Path) -> None:
    import hashlib

    path = tmp_path / "service.war"
    path.write_bytes(jar({"WEB-INF/lib/a.jar": jar(pom("org.yaml", "snakeyaml", "1.33"))}))
    report = scan(path, ScanOptions(secrets=False))
    assert [(p.name, p.version) for p in report.packages] == [("org.yaml:snakeyaml", "1.33")]
    assert report.digest == "sha256:" + hashlib.sha256(path.read_bytes()).hexdigest()


def _manifest(name: str, version: str, deps: dict[str, str] | None = None) -> str:
    """package.json as npm writes it into node_modules (real package metadata: name, version, deps)."""
    return json.dumps({"name": name, "version": version, "dependencies": deps or {}, "license": "MIT"})


def test_npm_inventory_is_the_installed_tree(tmp_path: Path) -> None:
    """Only what `node_modules` holds: no lock files shipped inside packages, no uninstalled
    devDependencies from the app's lock, no package.json of a package's own test fixtures."""
    lock = {
        "name": "shop",
        "lockfileVersion": 3,
        "packages": {
            "": {"name": "shop", "dependencies": {"express": "4.17.1"}, "devDependencies": {"mocha": "^10"}},
            "node_modules/express": {"version": "4.17.1"},
            "node_modules/qs": {"version": "6.7.0"},
            "node_modules/express/node_modules/debug": {"version": "2.6.9"},
            "node_modules/mocha": {"version": "10.2.0", "dev": True},
            "node_modules/chokidar": {"version": "3.5.3", "dev": True},
        },
    }
    nested_lock = {  # what a published package sometimes ships: its own dev tree, never installed
        "lockfileVersion": 2,
        "packages": {f"node_modules/devtool{i}": {"version": "1.0.0"} for i in range(50)},
        "dependencies": {f"devtool{i}": {"version": "1.0.0"} for i in range(50)},
    }
    write_tree(
        tmp_path,
        {
            "app/package.json": json.dumps({"name": "shop", "version": "1.0.0"}),
            "app/package-lock.json": json.dumps(lock),
            "app/node_modules/express/package.json": _manifest(
                "express", "4.17.1", {"qs": "6.7.0", "debug": "2.6.9"}
            ),
            "app/node_modules/qs/package.json": _manifest("qs", "6.7.0"),
            "app/node_modules/express/node_modules/debug/package.json": _manifest("debug", "2.6.9"),
            "app/node_modules/express/package-lock.json": json.dumps(nested_lock),
            "app/node_modules/qs/yarn.lock": 'leftpad@1:\n  version "1.0.0"\n',
            "app/node_modules/qs/test/fixtures/node_modules/fake/package.json": _manifest("fake", "0.0.1"),
            "app/node_modules/.package-lock.json": json.dumps(nested_lock),
        },
    )
    report = scan(tmp_path, ScanOptions(secrets=False))
    pkgs = {(p.name, p.version): p for p in report.packages if p.ecosystem == "npm"}
    assert set(pkgs) == {("express", "4.17.1"), ("qs", "6.7.0"), ("debug", "2.6.9")}
    assert pkgs[("qs", "6.7.0")].locations == ["app/node_modules/qs/package.json", "app/package-lock.json"]


def test_npm_lock_without_node_modules_reports_production_entries(tmp_path: Path) -> None:
    v1 = {
        "lockfileVersion": 1,
        "dependencies": {
            "lodash": {"version": "4.17.4"},
            "mocha": {
                "version": "5.0.0",
                "dev": True,
                "dependencies": {"debug": {"version": "3.1.0", "dev": True}},
            },
        },
    }
    write_tree(tmp_path, {"src/package-lock.json": json.dumps(v1)})
    report = scan(tmp_path, ScanOptions(secrets=False))
    assert {(p.name, p.version) for p in report.packages} == {("lodash", "4.17.4")}
    assert any("no node_modules installed beside" in n.message for n in report.notices)
