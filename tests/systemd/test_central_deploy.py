"""Deploying parkedge-central as docs/central.md says: the example config passes
``check-config``; nginx accepts the example proxy config and, in front of a real ``serve``,
terminates TLS, passes the client's address (not a forged one), sets HSTS and refuses big
bodies; backups (pg_dump/pg_restore, sqlite3 .backup) restore every row."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
import shutil
import socket
import sqlite3
import ssl
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import DBAPIError

from central.config import parse_config
from central.config.models import CentralConfig
from central.db import make_engine
from central.db.models import AuditLog, Base

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "central.example.toml"
NGINX = ROOT / "config" / "nginx" / "parkedge-central.conf"
RULES = ROOT / "config" / "rules.mall.example.toml"
ETC = "/etc/parkedge-central/"
PG = "host=127.0.0.1 port=5432 user=postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def central(*args: str, stdin: str | None = None, check: bool = True
            ) -> subprocess.CompletedProcess[str]:
    r = subprocess.run([sys.executable, "-m", "central", *args], input=stdin,
                       capture_output=True, text=True, timeout=120)
    if check:
        assert r.returncode == 0, r.stdout + r.stderr
    return r


def install_example(etc: Path, **replace: str) -> Path:
    """The example config as the docs install it, with /etc/parkedge-central/ under ``etc``:
    the database password file (0600) and the rule bundle put where it names them."""
    etc.mkdir(parents=True, exist_ok=True)
    pw = etc / "db.pw"
    pw.write_text("not-used-with-trust-auth\n")
    pw.chmod(0o600)
    shutil.copy(RULES, etc / "rules.toml")
    body = EXAMPLE.read_text(encoding="utf-8").replace(ETC, str(etc) + "/")
    for old, new in replace.items():
        assert old in body, old
        body = body.replace(old, new)
    conf = etc / "central.toml"
    conf.write_text(body, encoding="utf-8")
    return conf


# ------------------------------------------------------------------ the example config
def test_example_config_passes_check_config(tmp_path: Path) -> None:
    conf = install_example(tmp_path / "etc")
    r = central("check-config", "-c", str(conf))
    assert "OK, site mall-1 (Asia/Shanghai), database postgresql+psycopg" in r.stdout
    # ... and the check is real: the password file too open is refused with its key.
    (tmp_path / "etc" / "db.pw").chmod(0o644)
    bad = central("check-config", "-c", str(conf), check=False)
    assert bad.returncode == 2 and "database.password" in bad.stderr, bad.stderr


def test_example_config_lists_every_key() -> None:
    text_ = EXAMPLE.read_text(encoding="utf-8")
    sections = re.split(r"^\[(\w+)\]$", text_, flags=re.M)
    by_section = dict(zip(sections[1::2], sections[2::2], strict=True))
    for name, field in CentralConfig.model_fields.items():
        assert name in by_section, f"[{name}] missing"
        for key in getattr(field.annotation, "model_fields", {}):
            assert re.search(rf"^#? ?{key} = ", by_section[name], re.M), f"{name}.{key}"


def example_web() -> dict[str, Any]:
    cfg = parse_config(tomllib.loads(EXAMPLE.read_text(encoding="utf-8")))
    return {"listen": cfg.web.listen, "port": cfg.web.port, "max": cfg.web.max_body_bytes,
            "proxy": cfg.web.forwarded_allow_ips}


def test_nginx_example_matches_the_central_example() -> None:
    web = example_web()
    conf = NGINX.read_text(encoding="utf-8")
    upstream = re.search(r"upstream parkedge_central \{(.*?)\}", conf, re.S)
    assert upstream and re.search(rf"^\s*server {web['listen']}:{web['port']};",
                                  upstream.group(1), re.M)
    size = re.search(r"client_max_body_size (\d+)([km]?);", conf)
    assert size is not None
    factor = {"": 1, "k": 1024, "m": 1024 * 1024}[size.group(2)]
    assert int(size.group(1)) * factor == web["max"]
    # nginx on the same box connects from loopback: that is the address central trusts.
    assert web["proxy"] == "127.0.0.1" and web["listen"] == "127.0.0.1"
    assert "proxy_set_header X-Forwarded-For $remote_addr;" in conf
    assert "proxy_set_header X-Forwarded-Proto $scheme;" in conf
    assert re.search(r'Strict-Transport-Security "max-age=\d{7,}', conf)


# ------------------------------------------------------------------ nginx, for real
def nginx_exe() -> str:
    exe = shutil.which("nginx") or ("/usr/sbin/nginx" if os.access("/usr/sbin/nginx", os.X_OK)
                                    else None)
    if exe is None:
        pytest.skip("nginx is missing: apt-get install nginx-light (the proxy example's test)")
    return exe


def self_signed(dir_: Path) -> tuple[Path, Path]:
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    crt, pem = dir_ / "central.crt", dir_ / "central.key"
    crt.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    pem.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption()))
    pem.chmod(0o600)
    return crt, pem


def nginx_site(tmp: Path, https: int, http: int, upstream: int) -> Path:
    """The example proxy config on loopback ports, inside a minimal nginx.conf of its own."""
    crt, key = self_signed(tmp)
    site = NGINX.read_text(encoding="utf-8")
    for old, new in {"listen 443 ssl http2;": f"listen 127.0.0.1:{https} ssl http2;",
                     "listen 80;": f"listen 127.0.0.1:{http};",
                     "/etc/ssl/certs/parkedge-central.crt": str(crt),
                     "/etc/ssl/private/parkedge-central.key": str(key),
                     "/var/log/nginx/": f"{tmp}/",
                     "server 127.0.0.1:8080;": f"server 127.0.0.1:{upstream};"}.items():
        assert old in site, old
        site = site.replace(old, new)
    site = "\n".join(ln for ln in site.splitlines() if "listen [::]" not in ln)
    (tmp / "site.conf").write_text(site, encoding="utf-8")
    main = tmp / "nginx.conf"
    main.write_text(
        f"daemon off;\nmaster_process off;\npid {tmp}/nginx.pid;\n"
        f"error_log {tmp}/error.log warn;\nevents {{ worker_connections 64; }}\n"
        f"http {{\n  client_body_temp_path {tmp}/body;\n  proxy_temp_path {tmp}/proxy;\n"
        f"  fastcgi_temp_path {tmp}/fcgi;\n  uwsgi_temp_path {tmp}/uwsgi;\n"
        f"  scgi_temp_path {tmp}/scgi;\n  include {tmp}/site.conf;\n}}\n", encoding="utf-8")
    return main


def test_nginx_accepts_the_example(tmp_path: Path) -> None:
    exe = nginx_exe()
    main = nginx_site(tmp_path, free_port(), free_port(), 8080)
    r = subprocess.run([exe, "-t", "-p", str(tmp_path), "-c", str(main)],
                       capture_output=True, text=True, timeout=30)
    assert r.returncode == 0 and "test is successful" in r.stderr, r.stderr
    # nginx -t is not a rubber stamp: a broken directive fails it.
    (tmp_path / "site.conf").write_text("server { client_max_body_size lots; }\n")
    bad = subprocess.run([exe, "-t", "-p", str(tmp_path), "-c", str(main)],
                         capture_output=True, text=True, timeout=30)
    assert bad.returncode != 0


def wait_port(port: int, proc: subprocess.Popen[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"exited {proc.returncode}: {proc.communicate()[1][-2000:]}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise AssertionError(f"port {port} not open after {timeout}s")


def stop(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@pytest.fixture
def site_behind_nginx(tmp_path: Path) -> Iterator[dict[str, Any]]:
    """The example central config (SQLite instead of PostgreSQL) served by ``serve``, with
    the example nginx in front on loopback ports; both stopped at the end."""
    exe = nginx_exe()
    port, https, http = free_port(), free_port(), free_port()
    db = tmp_path / "central.db"
    conf = install_example(tmp_path / "etc", **{
        'url = "postgresql+psycopg://parkedge_central@127.0.0.1:5432/parkedge_central"':
            f'url = "sqlite:///{db}"',
        'password = { file = "': '# password = { file = "',
        "port = 8080": f"port = {port}",
        'listen = "127.0.0.1:9110"': 'listen = ""',
        "enabled = true": "enabled = false"})
    central("migrate", "-c", str(conf))
    central("user", "add", "alice", "--role", "admin", "--password-stdin", "-c", str(conf),
            stdin="correct horse battery\n")
    ngx = tmp_path / "nginx"
    ngx.mkdir()
    main = nginx_site(ngx, https, http, port)
    serve = subprocess.Popen([sys.executable, "-m", "central", "serve", "-c", str(conf)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    proxy = subprocess.Popen([exe, "-p", str(ngx), "-c", str(main)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_port(port, serve)
        wait_port(https, proxy)
        yield {"https": https, "http": http, "db": db, "ca": ngx / "central.crt"}
    finally:
        stop(proxy)
        stop(serve)


def test_sign_in_through_nginx(site_behind_nginx: dict[str, Any]) -> None:
    site = site_behind_nginx
    base = f"https://127.0.0.1:{site['https']}"
    # The client comes from another loopback address than nginx's own, so the address
    # central sees can only be the forwarded one; it also tries to forge X-Forwarded-For.
    tls = ssl.create_default_context(cafile=str(site["ca"]))  # verified, not verify=False
    transport = httpx.HTTPTransport(local_address="127.0.0.3", verify=tls)
    with httpx.Client(transport=transport, base_url=base, timeout=20) as client:
        r = client.post("/api/staff/login", headers={"X-Forwarded-For": "203.0.113.9"},
                        json={"username": "alice", "password": "correct horse battery"})
        assert r.status_code == 200, r.text
        cookie = r.headers["set-cookie"]
        attrs = {a.strip().split("=")[0].lower() for a in cookie.split(";")}
        assert {"secure", "httponly"} <= attrs and "samesite=strict" in cookie.lower()
        assert r.headers["strict-transport-security"].startswith("max-age=31536000")
        assert "server" not in r.headers or "nginx/" not in r.headers["server"]
        # the session works through the proxy
        assert client.get("/api/figures").status_code == 200
        # a body over web.max_body_bytes never reaches central
        big = client.post("/api/pos/purchases", content=b"x" * 300_000,
                          headers={"Content-Type": "application/json"})
        assert big.status_code == 413
    with sqlite3.connect(site["db"]) as db:
        (after,) = db.execute("SELECT after FROM audit_log WHERE action = 'staff.login'"
                              ).fetchone()
    assert '"127.0.0.3"' in after, after
    # Plain HTTP only redirects to HTTPS.
    plain = httpx.get(f"http://127.0.0.1:{site['http']}/api/figures", timeout=10)
    assert plain.status_code == 301
    assert plain.headers["location"].startswith("https://")


# ------------------------------------------------------------------ backup and restore
def fingerprint(engine: Engine) -> dict[str, list[tuple[str, ...]]]:
    """Every row of every table, as text, sorted: equal means nothing was lost or changed."""
    out = {}
    with engine.connect() as c:
        for table in Base.metadata.sorted_tables:
            rows = c.execute(select(table)).all()
            out[table.name] = sorted(tuple(str(v) for v in row) for row in rows)
        out["alembic_version"] = [tuple(r) for r in
                                  c.execute(text("SELECT version_num FROM alembic_version"))]
    return out


def populate(conf: Path, url: str) -> None:
    """Staff, members with plates, a shop, perk coupons and points lots, as an operator would."""
    central("user", "add", "alice", "--role", "admin", "--password-stdin", "-c", str(conf),
            stdin="correct horse battery\n")
    central("member", "add", "--id", "m1", "--tier", "gold", "--phone", "13800000001",
            "--plate", "粤B12345", "-c", str(conf))
    central("member", "add", "--id", "m2", "--tier", "normal", "-c", str(conf))
    central("shop", "add", "cafe", "--category", "dining", "-c", str(conf))
    central("perks", "--month", "2026-03", "-c", str(conf))
    from central.app import Central
    from central.config import load_config
    from central.services.points import adjust
    c = Central.from_config(load_config(conf))
    try:
        with c.tx() as s:
            when = dt.datetime(2026, 3, 7, 12, 0, tzinfo=dt.UTC)
            adjust(s, c.rules, "m1", 120, when, reason="opening balance", ref="r1")
            adjust(s, c.rules, "m1", -20, when, reason="correction", ref="r2")
            adjust(s, c.rules, "m2", 7, when, reason="welcome", ref="r3")
    finally:
        c.close()


def site_conf(tmp_path: Path, url: str) -> Path:
    conf = tmp_path / "central.toml"
    conf.write_text(f'[site]\nsite_id = "mall-1"\ntimezone = "Asia/Shanghai"\n'
                    f'[database]\nurl = "{url}"\n[rules]\nbundle = "{RULES}"\n',
                    encoding="utf-8")
    return conf


@pytest.fixture
def pg_database() -> Iterator[str]:
    psycopg = pytest.importorskip("psycopg")
    try:
        admin = psycopg.connect(PG + " dbname=postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        pytest.skip("no PostgreSQL at 127.0.0.1:5432")
    name = f"central_backup_{os.getpid()}_{int(time.time() * 1000) % 10**8}"
    admin.execute(f'CREATE DATABASE "{name}"')
    try:
        yield name
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.close()


def test_postgresql_backup_and_restore(tmp_path: Path, pg_database: str) -> None:
    for tool in ("pg_dump", "pg_restore"):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} missing: apt-get install postgresql-client")
    url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{pg_database}"
    conf = site_conf(tmp_path, url)
    central("migrate", "-c", str(conf))
    populate(conf, url)
    engine = make_engine(url)
    try:
        before = fingerprint(engine)
        assert len(before["points_lots"]) == 2 and before["audit_log"]
        dump = tmp_path / "central.dump"
        subprocess.run(["pg_dump", "-h", "127.0.0.1", "-U", "postgres", "-Fc", "-f", str(dump),
                        pg_database], check=True, timeout=120)
        # Life goes on after the backup ...
        central("member", "add", "--id", "m9", "--tier", "gold", "-c", str(conf))
        assert fingerprint(engine) != before
        engine.dispose()
        # ... then the restore, as the docs say (central stopped): the backup's state exactly.
        subprocess.run(["pg_restore", "-h", "127.0.0.1", "-U", "postgres", "--clean",
                        "--if-exists", "--no-owner", "-d", pg_database, str(dump)],
                       check=True, timeout=120, capture_output=True)
        assert fingerprint(engine) == before
        # The schema is whole: migrate is a no-op, the audit log is still append-only.
        r = central("migrate", "-c", str(conf))
        assert before["alembic_version"][0][0] in r.stdout
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as c:
            c.execute(AuditLog.__table__.update().values(actor="someone else"))
    finally:
        engine.dispose()


def test_sqlite_backup_and_restore(tmp_path: Path) -> None:
    if shutil.which("sqlite3") is None:
        pytest.skip("sqlite3 missing: apt-get install sqlite3")
    db = tmp_path / "central.db"
    url = f"sqlite:///{db}"
    conf = site_conf(tmp_path, url)
    central("migrate", "-c", str(conf))
    populate(conf, url)
    engine = make_engine(url)
    try:
        before = fingerprint(engine)
        # .backup while central holds the database open (a connection in a transaction)
        with engine.connect() as held:
            held.execute(text("SELECT count(*) FROM members"))
            subprocess.run(["sqlite3", str(db), f".backup {tmp_path / 'central.bak'}"],
                           check=True, timeout=60)
        central("member", "add", "--id", "m9", "--tier", "gold", "-c", str(conf))
        engine.dispose()
        # Restore: central stopped, the copy put back (its -wal/-shm files removed).
        for extra in (tmp_path / "central.db-wal", tmp_path / "central.db-shm"):
            extra.unlink(missing_ok=True)
        shutil.copy(tmp_path / "central.bak", db)
        assert fingerprint(engine) == before
        assert before["alembic_version"][0][0] in central("migrate", "-c", str(conf)).stdout
    finally:
        engine.dispose()


def test_docs_name_only_files_that_exist() -> None:
    # docs/central.md's install steps copy these files: a renamed one must fail here first.
    doc = (ROOT / "docs" / "central.md").read_text(encoding="utf-8")
    named = set(re.findall(r"\b((?:systemd|config)/[\w@.\-/]+\.(?:service|sysusers|tmpfiles|"
                           r"toml|conf))\b", doc))
    assert {"systemd/parkedge-central.service", "systemd/parkedge-central@.service",
            "systemd/parkedge-central-migrate.service", "config/central.example.toml",
            "config/nginx/parkedge-central.conf"} <= named
    missing = sorted(n for n in named if not (ROOT / n).exists())
    assert missing == [], missing
