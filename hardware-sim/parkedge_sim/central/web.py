"""The marketing page of the bench central: members, history, rewards, campaigns, figures.

Loopback only, and only for requests whose Host header is loopback (DNS rebinding); a POST
must be ``application/json`` (a cross-site form cannot send that). Plain ``http.server``: a
bench tool, no framework. The page itself is static HTML + JS over the JSON API:

- members with their balance and transaction history, refreshed every second;
- the reward catalogue (parking hours, discounts, merchandise, experiences): add rewards,
  redeem one for a member; a parking reward becomes a coupon the lanes get with the
  member's next state (within seconds);
- the campaign (the rule bundle, as JSON): edited and published, i.e. validated with
  ``edge.pricing``, signed and published retained; lanes switch at its ``effective_from``;
- the figures of ``figures.figures`` (also ``python -m parkedge_sim.central --json``).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from edge.fields import FieldError, check_id
from edge.pricing import BundleError
from parkedge_sim.central.figures import figures, history
from parkedge_sim.central.server import CentralServer

log = logging.getLogger(__name__)
MAX_BODY = 1024 * 1024
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")


class ApiError(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class MarketingWeb:
    def __init__(self, central: CentralServer, host: str = "127.0.0.1", port: int = 0) -> None:
        if host not in ("127.0.0.1", "::1", "localhost"):
            raise ValueError(f"host: {host!r}: the marketing page listens on loopback only")
        self._server = ThreadingHTTPServer((host, port), _handler(central))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        name="central-web")
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _hostname(host: str) -> str:
    if host.startswith("["):
        return host[: host.find("]") + 1]
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


def member_detail(central: CentralServer, member_id: str) -> dict[str, Any]:
    st = central.db.member_state(member_id, {}, 0)
    if st is None:
        raise ApiError(404, f"no member {member_id!r}")
    return {"member_id": member_id, "name": st.name, "tier": st.tier, "balance": st.balance,
            "version": st.version, "flagged": st.flagged, "plates": list(st.plates),
            "coupons": [{"coupon_id": c.coupon_id, "kind": c.kind, "value": str(c.value),
                         "valid_until": c.valid_until} for c in st.coupons],
            "history": history(central.db, member_id)}


def _get(central: CentralServer, path: str) -> tuple[str, Any]:
    if path == "/":
        return "text/html", PAGE
    if path == "/api/figures":
        return "application/json", figures(central.db)
    if path == "/api/members":
        return "application/json", central.db.members_overview()
    if path.startswith("/api/members/"):
        return "application/json", member_detail(central, path.removeprefix("/api/members/"))
    if path == "/api/rewards":
        return "application/json", central.db.rewards()
    if path == "/api/rules":
        serial, bundle = central.current_rules()
        return "application/json", {"serial": serial, "bundle": bundle}
    raise ApiError(404, "not found")


def _field(body: dict[str, Any], key: str) -> str:
    v = body.get(key)
    if not isinstance(v, str) or not v or len(v) > 128:
        raise ApiError(400, f"{key}: expected a non-empty string")
    return v


def _id_field(body: dict[str, Any], key: str) -> str:
    """An id by the definition the lanes use (``edge.fields.check_id``)."""
    try:
        return check_id(body.get(key), key)
    except FieldError as exc:
        raise ApiError(400, str(exc)) from None


def _post(central: CentralServer, path: str, body: Any) -> Any:
    if not isinstance(body, dict):
        raise ApiError(400, "expected a JSON object")
    if path == "/api/rules":
        return {"serial": central.publish_rules(body)}
    if path == "/api/redeem":
        mid, rid = _id_field(body, "member_id"), _id_field(body, "reward_id")
        redemption = body.get("redemption_id") or f"web-{uuid.uuid4().hex[:12]}"
        coupon = central.redeem(str(redemption), mid, rid, datetime.now(UTC))
        return {"redemption_id": redemption, "coupon_id": coupon,
                "balance": central.db.balance(mid)}
    if path == "/api/rewards":
        points = body.get("points")
        if not isinstance(points, int) or isinstance(points, bool):
            raise ApiError(400, "points: expected an integer")
        try:
            value = Decimal(str(body.get("value")))
        except InvalidOperation:
            raise ApiError(400, f"value: {body.get('value')!r} is not a number") from None
        central.add_reward(_id_field(body, "reward_id"), _field(body, "kind"),
                           _field(body, "name"), points, value)
        return {"reward_id": body["reward_id"]}
    raise ApiError(404, "not found")


def _handler(central: CentralServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("web: " + fmt, *args)

        def _send(self, code: int, body: Any, ctype: str = "application/json") -> None:
            data = (body if isinstance(body, str) else json.dumps(
                body, ensure_ascii=False, default=str)).encode("utf-8")
            self.send_response(code)
            self.send_header("Content-Type", f"{ctype}; charset=utf-8")
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(data)

        def _serve(self, method: str) -> None:
            try:
                if _hostname(self.headers.get("Host", "")) not in LOOPBACK_HOSTS:
                    raise ApiError(400, f"Host {self.headers.get('Host')!r} refused: "
                                        "loopback only")
                path = self.path.split("?")[0]
                if method == "GET":
                    ctype, body = _get(central, path)
                    self._send(200, body, ctype)
                    return
                if not self.headers.get("Content-Type", "").startswith("application/json"):
                    raise ApiError(400, "send application/json")
                n = int(self.headers.get("Content-Length") or 0)
                if n <= 0 or n > MAX_BODY:
                    raise ApiError(413 if n > MAX_BODY else 400, "body size")
                try:
                    body = json.loads(self.rfile.read(n), parse_float=Decimal)
                except ValueError as exc:
                    raise ApiError(400, f"not JSON: {exc}") from None
                self._send(200, _post(central, path, body))
            except ApiError as exc:
                self._send(exc.status, {"error": str(exc)})
            except (BundleError, ValueError) as exc:  # refused campaign, reward, redemption
                self._send(400, {"error": str(exc)})
            except Exception as exc:  # the page never takes central down
                log.exception("web %s %s", method, self.path)
                self._send(500, {"error": f"{type(exc).__name__}: {exc}"})

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

    return Handler


PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>parkedge points</title>
<style>
body{font:14px system-ui,sans-serif;margin:0;background:#f4f6f8;color:#1c2430}
header{background:#0b5cad;color:#fff;padding:10px 18px}header h1{margin:0;font-size:20px}
main{display:grid;grid-template-columns:1fr 1fr;gap:14px;padding:14px}
section{background:#fff;border-radius:8px;padding:10px 14px;box-shadow:0 1px 3px #0002}
h2{font-size:16px;margin:4px 0 8px;color:#0b5cad}
table{border-collapse:collapse;width:100%}td,th{padding:3px 6px;border-bottom:1px solid #e3e7ec;
text-align:left}th{background:#eef3f9}tr.pick{cursor:pointer}tr.pick:hover{background:#fff5d6}
.big{font-size:28px;font-weight:600;color:#0b7a3b}.err{color:#b00020}.ok{color:#0b7a3b}
textarea{width:100%;height:220px;font:12px monospace}button{margin:4px 4px 4px 0}
.bar{display:inline-block;height:10px;background:#0b5cad;vertical-align:middle}
</style></head><body>
<header><h1>Parking points &mdash; marketing</h1></header>
<main>
<section id="members-box"><h2>Members</h2>
<table id="members"><thead><tr><th>member</th><th>name</th><th>tier</th><th>balance</th>
</tr></thead><tbody></tbody></table></section>
<section id="member"><h2>Member <span id="m-id">&mdash;</span></h2>
<div>balance <span id="m-balance" class="big">&ndash;</span> points
<span id="m-flag" class="err"></span></div>
<div>plates: <span id="m-plates"></span></div>
<div>coupons: <span id="m-coupons"></span></div>
<div><label>reward <select id="redeem-reward"></select></label>
<button id="redeem">redeem</button> <span id="redeem-result"></span></div>
<h2>History</h2>
<table id="history"><thead><tr><th>time</th><th>kind</th><th>points</th><th>id</th></tr>
</thead><tbody></tbody></table></section>
<section id="rewards-box"><h2>Reward catalogue</h2>
<table id="rewards"><thead><tr><th>reward</th><th>kind</th><th>name</th><th>points</th>
<th>value</th></tr></thead><tbody></tbody></table>
<div><input id="rw-id" placeholder="id" size="6"><select id="rw-kind">
<option>parking_hours</option><option>discount</option><option>merchandise</option>
<option>experience</option></select><input id="rw-name" placeholder="name" size="12">
<input id="rw-points" placeholder="points" size="5"><input id="rw-value" placeholder="value"
size="5"><button id="rw-add">add reward</button> <span id="rw-result"></span></div>
</section>
<section id="campaign-box"><h2>Campaign (rule bundle) &mdash; serial <span id="serial">0</span>
</h2><textarea id="campaign" spellcheck="false"></textarea>
<button id="publish">sign and publish</button> <span id="publish-result"></span></section>
<section id="figures-box" style="grid-column:1/3"><h2>Figures</h2>
<table id="figures"><tbody></tbody></table></section>
</main>
<script>
"use strict";
let current = null;
const $ = (id) => document.getElementById(id);
async function api(path, body) {
  const opt = body === undefined ? {} : {method: "POST", body: JSON.stringify(body),
    headers: {"Content-Type": "application/json"}};
  const r = await fetch(path, opt);
  const data = await r.json();
  if (!r.ok) throw new Error(data.error || r.statusText);
  return data;
}
function row(tbody, cells, onclick) {
  const tr = document.createElement("tr");
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c === null || c === undefined ? "" : String(c);
    tr.appendChild(td);
  }
  if (onclick) { tr.className = "pick"; tr.onclick = onclick; }
  tbody.appendChild(tr);
  return tr;
}
async function loadMembers() {
  const ms = await api("/api/members");
  const tb = $("members").tBodies[0]; tb.replaceChildren();
  for (const m of ms) {
    const tr = row(tb, [m.member_id, m.name, m.tier, m.balance], () => show(m.member_id));
    tr.dataset.member = m.member_id;
  }
}
async function show(id) { current = id; await loadMember(); }
async function loadMember() {
  if (current === null) return;
  const m = await api("/api/members/" + encodeURIComponent(current));
  $("m-id").textContent = m.member_id + (m.name ? " (" + m.name + ")" : "");
  $("m-balance").textContent = m.balance;
  $("m-flag").textContent = m.flagged ? "overdrawn: blocked on every lane" : "";
  $("m-plates").textContent = m.plates.join(", ");
  $("m-coupons").textContent = m.coupons.map(c => c.coupon_id + " (" + c.kind + " "
    + c.value + ")").join(", ") || "none";
  const tb = $("history").tBodies[0]; tb.replaceChildren();
  for (const h of m.history) row(tb, [h.at, h.kind, h.points, h.id]);
}
async function loadRewards() {
  const rs = await api("/api/rewards");
  const tb = $("rewards").tBodies[0]; tb.replaceChildren();
  const sel = $("redeem-reward"); const keep = sel.value; sel.replaceChildren();
  for (const r of rs) {
    row(tb, [r.reward_id, r.kind, r.name, r.points, r.value]);
    const o = document.createElement("option"); o.value = r.reward_id;
    o.textContent = r.name + " (" + r.points + " points)"; sel.appendChild(o);
  }
  if (keep) sel.value = keep;
}
async function loadRules() {
  const r = await api("/api/rules");
  $("serial").textContent = r.serial;
  if (r.bundle && !$("campaign").dataset.touched)
    $("campaign").value = JSON.stringify(r.bundle, null, 1);
}
async function loadFigures() {
  const f = await api("/api/figures");
  const tb = $("figures").tBodies[0]; tb.replaceChildren();
  for (const [k, v] of Object.entries(f)) {
    const tr = row(tb, [k, typeof v === "object" ? JSON.stringify(v) : v]);
    tr.dataset.figure = k;
    if (k === "redemption_rate_pct") {
      const bar = document.createElement("span"); bar.className = "bar";
      bar.style.width = Math.min(100, Number(v)) * 2 + "px"; tr.cells[1].appendChild(bar);
    }
  }
}
function say(id, text, ok) { $(id).textContent = text; $(id).className = ok ? "ok" : "err"; }
$("redeem").onclick = async () => {
  try {
    const r = await api("/api/redeem", {member_id: current, reward_id: $("redeem-reward").value});
    say("redeem-result", "redeemed" + (r.coupon_id ? ": coupon " + r.coupon_id : "")
      + ", balance " + r.balance, true);
    await Promise.all([loadMember(), loadMembers(), loadFigures()]);
  } catch (e) { say("redeem-result", e.message, false); }
};
$("rw-add").onclick = async () => {
  try {
    await api("/api/rewards", {reward_id: $("rw-id").value, kind: $("rw-kind").value,
      name: $("rw-name").value, points: parseInt($("rw-points").value, 10),
      value: $("rw-value").value});
    say("rw-result", "added", true); await loadRewards();
  } catch (e) { say("rw-result", e.message, false); }
};
$("campaign").oninput = () => { $("campaign").dataset.touched = "1"; };
$("publish").onclick = async () => {
  let bundle;
  try { bundle = JSON.parse($("campaign").value); }
  catch (e) { say("publish-result", "not JSON: " + e.message, false); return; }
  try {
    const r = await api("/api/rules", bundle);
    say("publish-result", "published " + bundle.version + " as serial " + r.serial, true);
    delete $("campaign").dataset.touched; await loadRules();
  } catch (e) { say("publish-result", e.message, false); }
};
async function tick() {
  try { await Promise.all([loadMembers(), loadMember(), loadFigures(), loadRules()]); }
  catch (e) { console.error(e); }
}
loadRewards(); tick(); setInterval(tick, 1000);
</script></body></html>
"""
