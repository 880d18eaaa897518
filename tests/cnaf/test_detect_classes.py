"""Issue 12's detection classes with attacker variants written here (not the CRS corpus):
LFI normalisation and the installed CRS file lists, PHP uploads/tags/functions, protocol (920)
and multipart (922) checks, and the benign-side structure checks that keep CRS noise out."""

from __future__ import annotations

import pytest

from garrison.cnaf.crs.data import phrases
from garrison.cnaf.detect import multipart
from garrison.cnaf.engine import inspect
from garrison.cnaf.request import HttpRequest
from garrison.cnaf.structure import header_level, is_code_snippet, is_json_document, is_xml_document
from garrison.policy.cnaf import CnafControls

OWN = CnafControls(crs={"enabled": False})
CRS_INSTALLED = bool(phrases("lfi-os-files.data"))


def req(
    target: str, headers: list[tuple[str, str]] | None = None, body: bytes = b"", method: str = ""
) -> HttpRequest:
    return HttpRequest(
        method or ("POST" if body else "GET"),
        target,
        headers=[("Host", "app.example.com"), *(headers or [])],
        body=body,
        peer_ip="192.0.2.1",
    )


def classes(r: HttpRequest, controls: CnafControls = OWN) -> set[str]:
    return {f.attack for f in inspect(r, controls)}


def form(body: str) -> HttpRequest:
    return req("/f", [("Content-Type", "application/x-www-form-urlencoded")], body.encode())


@pytest.mark.parametrize(
    "r",
    [
        req("/a?f=..;/..;/WEB-INF/web.xml"),  # Tomcat path parameter
        req("/a?x=..;.\\.;\\."),
        req("/a", [("X-Anything", "0x2e0x2e0x2f0x2e0x2e0x2fetc")]),  # hex-escaped dots
        req("/a?q=cat+%2Fetc%2Fsubuid"),  # absolute OS path
        req("/a?q=less+/proc/sched_debug"),
        req("/get/sys/class/net"),
        req("/.claude/settings.local.json"),  # hidden dirs of tools
        req("/app/.vscode/sftp.json"),
        req("/a?file=ssh2.exec://u:p@h:22/usr/bin/id"),  # PHP extension wrappers
        req("/a?file=compress.bzip2:///etc/hosts"),
    ],
)
def test_lfi_variants(r: HttpRequest) -> None:
    assert "lfi" in classes(r)


@pytest.mark.skipif(not CRS_INSTALLED, reason="needs the installed CRS data files")
@pytest.mark.parametrize(
    "r",
    [
        req("/a", [("User-Agent", "cat /etc/mysql/my.cnf")]),
        req("/a", [("X-Api-Version", "../../var/log/nginx/error.log")]),
        req("/download/etc/redis-sentinel.conf"),
    ],
)
def test_lfi_crs_file_list_in_headers_and_path(r: HttpRequest) -> None:
    assert "lfi" in classes(r)


@pytest.mark.parametrize(
    "r",
    [
        req("/a", [("X-Filename", "shell.phar")]),
        req("/a", [("X_Filename", "x.php5 ")]),
        req("/a", [("X-File-Name", "invoice.php.jpg")]),
        req("/a", [("X-Filename", "/tmp/sess_0123456789abcdefghij")]),
        req("/a?q=%3C%3Fxml%3Asystem(%27id%27)%3B"),  # short open tag disguised as <?xml
        req("/a?q=%24%20%20%7B%20CONSTANT%20%7D"),  # $ { CONSTANT }
        req("/a?q=pg_enter_pipeline_mode%20(1)"),  # PHP extension function
        req("/a?q=sodium_crypto_box_keypair()"),
    ],
)
def test_php_variants(r: HttpRequest) -> None:
    assert "code_injection" in classes(r)


def test_php_upload_in_multipart_with_bare_lf() -> None:
    body = (
        b'--B\nContent-Disposition: form-data; name="f"; filename="a.phtml.png"\n'
        b"Content-Type: image/png\n\nxx\n--B--\n"
    )
    r = req("/up", [("Content-Type", "multipart/form-data; boundary=B")], body)
    assert "code_injection" in classes(r)


@pytest.mark.parametrize(
    "r",
    [
        req("/a", [("Content-Range", "bytes 0-1/2")]),
        req("/a", [("Proxy", "http://evil")]),  # httpoxy
        req("/a", [("Range", "bytes=0-1,2-3,4-5,6-7,8-9,10-11")]),
        req("/a", [("Content-Type", "text/plain")], b"hi", method="GET"),
        req("/a", [("Content-Type", "no-slash-type")], b"x=1"),
        req("/a", [("Content-Type", "application/x-www-form-urlencoded; charset=utf-7")], b"x=1"),
        req("/a", [("Content-Type", "text/plain; charset=utf-8; charset=utf-7")], b"x"),
        req("/a", [("Content-Type", 'application/x-www-form-urlencoded; boundary="charset=utf-7"')], b"x=1"),
        req("/a?name%00=x"),
        req("/a", [("Accept", "")]),
        req("/a", [("Accept", "text/html;charset=CP1026,*/*")]),
        req("/a", [("Accept-Charset", "utf-7")]),
        req("/a", [("Request-Range", "bytes=1-2")]),
    ],
)
def test_protocol_variants(r: HttpRequest) -> None:
    assert "protocol" in classes(r)


MP = "multipart/form-data; boundary=XyZ"


@pytest.mark.parametrize(
    "body",
    [
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+ADw-\r\n--XyZ--\r\n',
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nContent-Transfer-Encoding: base64\r\n\r\nx\r\n--XyZ--\r\n',
        b'--XyZ\r\nContent-Disposition: form-data; name="a"; filename="x;.txt"\r\n\r\nx\r\n--XyZ--\r\n',
        b"--XyZ\r\nContent-Disposition: form-data; name=a; filename='x.php'\r\n\r\nx\r\n--XyZ--\r\n",
        b'--XyZ\r\nContent-Disposition: form-data; name="a=b"\r\n\r\nx\r\n--XyZ--\r\n',
        b'--XyZ\r\nContent-Disposition: form-data; name="_charset_"\r\n\r\nibm037\r\n--XyZ--\r\n',
        b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\nContent-Type: text/plain; charset=utf-16\r\n\r\nx\r\n--XyZ--\r\n',
        b'--Other\r\nContent-Disposition: form-data; name="a"\r\n\r\nx\r\n--Other--\r\n',
    ],
)
def test_multipart_variants(body: bytes) -> None:
    assert multipart.check(MP, body) is not None
    assert "protocol" in classes(req("/up", [("Content-Type", MP)], body))


def test_benign_multipart_and_content_types_pass() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="name"\r\n\r\nZo\xc3\xab\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="f"; filename="K&auml;se O\'Brien.pdf"\r\n'
        b"Content-Type: application/pdf\r\n\r\n%PDF\r\n--XyZ--\r\n"
    )
    assert multipart.check(MP, body) is None
    assert classes(req("/up", [("Content-Type", MP)], body)) == set()
    for ct in (
        "application/json; charset=UTF-8",
        "text/html;charset=iso-8859-1",
        'multipart/form-data; boundary="a b"',
    ):
        assert multipart.content_type_problem(ct) is None, ct


def test_benign_paths_and_values_pass() -> None:
    assert classes(req("/.well-known/acme-challenge/abc")) == set()
    assert classes(req("/static/app.9f3c.js")) == set()
    assert classes(req("/a?q=array+of+strings")) == set()
    assert classes(req("/a", [("X-Filename", "report.pdf")])) == set()
    browser = [("Accept", "text/html,*/*;q=0.8"), ("Accept-Charset", "utf-8, iso-8859-1;q=0.5")]
    assert classes(req("/a", browser)) == set()
    assert "lfi" in classes(req("/backup/users.db"))
    assert "lfi" in classes(req("/dump.rdb"))


def test_structure_checks() -> None:
    assert is_json_document('[{"id":1,"qty":2}]')
    assert not is_json_document('{"a":1}} or 1=1')
    assert is_xml_document('<?xml version="1.0"?><a x="1"><b>t</b></a>')
    assert not is_xml_document("<a><b></a>")
    assert not is_xml_document('<!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]><a>&x;</a>')
    assert is_code_snippet("snippet", "if (a == b) { return; }", structured=True)
    assert is_code_snippet("doc.sql", "SELECT a\nFROM t WHERE b = 'x';", structured=False)  # several lines
    assert not is_code_snippet(
        "snippet", "if (a == b) { return; }", structured=False
    )  # a one-line form value
    assert not is_code_snippet(
        "snippet", "x'); DROP TABLE t;--", structured=True
    )  # a breakout leaves a quote open
    assert not is_code_snippet("q", "if (a == b) { return; }", structured=True)  # not a field made for code
    assert not is_code_snippet("code", "time ifconfig", structured=True)  # OAuth/promo codes are no snippets
    chrome = (
        "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
        "Chrome/120.0.0.0 Safari/537.36"
    )
    assert header_level("user-agent", chrome) == 1
    assert header_level("user-agent", chrome + " ${jndi:ldap://x}") is None
    assert header_level("accept-language", "ps-AF,ps;q=0.9,en;q=0.8") == 0
    assert header_level("accept-language", "en'; select 1") is None
