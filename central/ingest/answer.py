"""The part of a full snapshot answer that is the same for every lane of a site: the signed
lane roster and the signed rule bundle, built and signed once per change instead of once
per request.

Why: after an outage a whole site reconnects at once and every lane asks for a full
snapshot. Building the answer per request (parse the bundle's TOML, lock, merge the
campaigns, digest the bundle and the roster, record or look up both serials, sign both)
took about a sixth of a worker's CPU in a 200-lane storm (docs/scale.md). A cached answer
is valid while what it was built from is unchanged, which :meth:`Answers.lookup` checks in
the request's own transaction without the publish lock:

- the configured bundle file (path, mtime, size) and the site's published campaigns (id and
  body): the bundle's content;
- the newest ``rules_published`` row: its serial and digest must be the cached bundle's (a
  publish records the next serial in the same transaction as its campaign row, so a bundle
  published by any worker or the web changes it);
- the newest ``roster_published`` row: the cached roster's serial and digest (a rotated key
  or a new lane, in any worker, records the next serial).

Anything else (a miss, a serial moved) goes the locked way (``IngestWorker._site_rules``),
which records serials as before, and the answer is cached again. A lane answered from the
cache gets exactly what the locked way would have given it at that moment.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from sqlalchemy import bindparam, text
from sqlalchemy.orm import Session

from central.db.types import UtcDateTime
from central.ingest import state
from central.services import refunds
from central.services.campaign_publish import published_rows
from edge.sync import codec

#: What a bundle is built from: the file's (path, mtime_ns, size), the campaigns' (id, body).
SourceKey = tuple[tuple[str, int, int], tuple[tuple[int, str], ...]]


def source_key(s: Session, site: str, path: Path) -> SourceKey:
    st = path.stat()
    rows = published_rows(s, site)
    return ((str(path), st.st_mtime_ns, st.st_size), tuple((int(r.id), r.body) for r in rows))


#: What :meth:`Answers.lookup` reads, in one round trip and without the ORM (three ORM
#: queries were 15 % of a worker in a storm): the newest rules and roster serials and
#: digests, the site's published campaigns as ``source_key`` reads them, and the version
#: of the site's live prepayments (``refunds.answer_messages``).
_CURRENT = text(
    "SELECT 'r' AS k, serial AS n, digest AS t FROM (SELECT serial, digest FROM "
    "rules_published ORDER BY serial DESC LIMIT 1) AS r "
    "UNION ALL SELECT 'o', serial, digest FROM (SELECT serial, digest FROM "
    "roster_published ORDER BY serial DESC LIMIT 1) AS o "
    "UNION ALL SELECT 'c', id, body FROM (SELECT id, body FROM campaigns "
    "WHERE site_id = :site AND state = 'published' ORDER BY id) AS c "
    # the site's prepayments' version (central/services/refunds.py): the revocations and
    # prepayments of the answer come from ``refunds.answer_messages``' cache without a
    # statement of their own
    f"UNION ALL SELECT 'p', n, t FROM ({refunds.VERSION_SQL}) AS p"
).bindparams(bindparam("now", type_=UtcDateTime()))


def roster_digest(site: str, lane_keys: Mapping[str, bytes]) -> str:
    """As ``state.roster_serial`` digests the roster."""
    return hashlib.sha256(codec.canonical(
        {"site": site, "keys": state.session_public_keys(lane_keys)})).hexdigest()


@dataclass(frozen=True)
class Fixed:
    """A full snapshot answer's common part, signed, and what it was built from."""

    source: SourceKey
    rules_serial: int
    rules_digest: str
    roster_serial: int
    roster_digest: str
    roster: bytes  # the signed ``lanes`` message
    rules: bytes   # the signed ``rules`` message


class Answers:
    """One site's cached common answer (one worker's; each worker keeps its own)."""

    def __init__(self, site: str, lane_keys: Mapping[str, bytes], key: Ed25519PrivateKey,
                 path: Path) -> None:
        self.site, self.lane_keys, self.key, self.path = site, lane_keys, key, path
        self._roster_digest = roster_digest(site, lane_keys)
        self._fixed: Fixed | None = None
        self.hits = self.misses = 0
        #: the revoked set's version read by the last ``lookup`` (None: not read)
        self.revoked_version: refunds.Version | None = None

    def lookup(self, s: Session, now: datetime) -> Fixed | None:
        """The cached answer if it is still what the locked way would build now, else
        None. One small read in ``s``; no lock, no write. Also sets ``revoked_version``
        (the revoked prepayments' version at ``now``) when it answers."""
        f = self._fixed
        self.revoked_version = None
        if f is None:
            self.misses += 1
            return None
        rules = roster = revoked = None
        camps: list[tuple[int, str]] = []
        for k, n, t in s.connection().execute(_CURRENT, {"site": self.site, "now": now}):
            if k == "r":
                rules = (int(n), str(t))
            elif k == "o":
                roster = (int(n), str(t))
            elif k == "p":
                revoked = (int(n), str(t or ""))
            else:
                camps.append((int(n), str(t)))
        st = self.path.stat()
        source = ((str(self.path), st.st_mtime_ns, st.st_size), tuple(camps))
        if (rules != (f.rules_serial, f.rules_digest)
                or roster != (f.roster_serial, f.roster_digest)
                or f.roster_digest != self._roster_digest or source != f.source):
            self.misses += 1
            return None
        self.hits += 1
        self.revoked_version = revoked
        return f

    def store(self, source: SourceKey, bundle: Mapping[str, Any], rules_serial: int,
              roster_serial: int) -> Fixed:
        """Sign and remember the answer the locked way built (``source`` read in its
        transaction, under the publish lock)."""
        f = Fixed(source, rules_serial, hashlib.sha256(codec.canonical(bundle)).hexdigest(),
                  roster_serial, self._roster_digest,
                  state.roster(self.site, self.lane_keys, roster_serial, self.key),
                  codec.sign_rules(bundle, rules_serial, self.key, self.site))
        self._fixed = f
        return f
