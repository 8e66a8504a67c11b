"""MQTT over TLS with per-lane client certificates made here with ``cryptography``."""

from __future__ import annotations

import ipaddress
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from edge.sync.link import LinkSettings, TlsFiles
from edge.sync.service import LaneSync
from tests.sync.conftest import (
    KEYS,
    SITE,
    Broker,
    make_central,
    make_store,
    wait_until,
    write_events,
)

NOW = datetime.now(UTC)


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(subject: str, key: ec.EllipticCurvePrivateKey, issuer: x509.Certificate | None,
          issuer_key: ec.EllipticCurvePrivateKey, *, ca: bool = False,
          server: bool = False) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    b = (x509.CertificateBuilder().subject_name(name)
         .issuer_name(issuer.subject if issuer else name).public_key(key.public_key())
         .serial_number(x509.random_serial_number())
         .not_valid_before(NOW - timedelta(hours=1)).not_valid_after(NOW + timedelta(days=1))
         .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        b = b.add_extension(x509.SubjectAlternativeName(
            [x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), critical=False)
    return b.sign(issuer_key, hashes.SHA256())


def _write(d: Path, name: str, cert: x509.Certificate,
           key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    c, k = d / f"{name}.pem", d / f"{name}.key"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                    serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption()))
    k.chmod(0o600)
    return str(c), str(k)


def test_lane_with_site_certificate_syncs_and_a_foreign_one_is_refused(tmp_path: Path) -> None:
    ca_key, rogue_key = _key(), _key()
    ca = _cert("parkedge site CA", ca_key, None, ca_key, ca=True)
    rogue = _cert("rogue CA", rogue_key, None, rogue_key, ca=True)
    ca_file = tmp_path / "ca.pem"
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    k = _key()
    srv = _write(tmp_path, "server", _cert("broker", k, ca, ca_key, server=True), k)
    k = _key()
    lane = _write(tmp_path, "entry-1", _cert("entry-1", k, ca, ca_key), k)
    k = _key()
    central_cert = _write(tmp_path, "central", _cert("central", k, ca, ca_key), k)
    k = _key()
    bad = _write(tmp_path, "exit-1", _cert("exit-1", k, rogue, rogue_key), k)

    broker = Broker(tmp_path, extra="")
    broker.conf.write_text(
        f"listener {broker.port} 127.0.0.1\nallow_anonymous false\npersistence false\n"
        f"cafile {ca_file}\ncertfile {srv[0]}\nkeyfile {srv[1]}\n"
        "require_certificate true\nuse_identity_as_username true\n"
        "user root\n")  # read the test's 0700 temp files (tests run as root)
    broker.start()
    central = make_central(tmp_path, broker.port, tls=(str(ca_file), *central_cert))
    central.start()

    def sync_with(store_lane: str, files: tuple[str, str]) -> LaneSync:
        store = make_store(tmp_path, store_lane)
        write_events(store, 20)
        s = LaneSync(store, site=SITE, hmac_key=KEYS[store_lane], ack_timeout_s=1.0,
                     settings=LinkSettings(host="127.0.0.1", port=broker.port,
                                           client_id=store_lane, keepalive_s=5,
                                           tls=TlsFiles(str(ca_file), *files)))
        s.start()
        return s

    good = sync_with("entry-1", lane)
    rogue_lane = sync_with("exit-1", bad)
    try:
        assert wait_until(lambda: good.backlog() == 0, 20)
        assert len(central.db.entry_ids("entry-1")) == 20
        time.sleep(1.0)
        assert not rogue_lane.link.connected.is_set()  # the handshake is refused
        assert central.db.entry_ids("exit-1") == []
        assert rogue_lane.backlog() == 20  # and its ledger simply waits
    finally:
        good.stop()
        rogue_lane.stop()
        central.stop()
        broker.stop()
