// parkedge bench page: polls /api/state every 300 ms and renders each simulated lane.
// No framework, no build step: DOM built once per lane from the <template>, then updated.
"use strict";

const POLL_MS = 300;
const cards = new Map();   // lane id -> {root, framePlate}

function el(root, sel) { return root.querySelector(sel); }

async function post(path, body) {
  const resp = await fetch(path, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await resp.json();
  if (!resp.ok) { showErrors([data.error || resp.statusText]); }
  return data;
}

function showErrors(list) {
  const box = document.getElementById("errors");
  box.hidden = !list.length;
  box.textContent = list.join(" · ");
}

function makeCard(id, lane, faults) {
  const root = document.getElementById("lane-tpl").content.firstElementChild.cloneNode(true);
  root.id = "lane-" + id;
  root.dataset.lane = id;
  el(root, ".lane-id").textContent = id;
  el(root, ".direction").textContent = lane.direction;
  el(root, ".drive-btn").textContent = lane.direction === "exit" ? "drive out" : "drive in";
  const plate = () => el(root, ".plate-input").value.trim();
  el(root, "form.drive").addEventListener("submit", (ev) => {
    ev.preventDefault();
    post(`/api/lanes/${id}/vehicle`, { plate: plate() });
  });
  el(root, ".reverse-btn").addEventListener("click", () =>
    post(`/api/lanes/${id}/vehicle`, { plate: plate(), reverse: true }));
  const tbody = el(root, "table.faults tbody");
  for (const name of faults) {
    const tr = document.createElement("tr");
    const td = document.createElement("td");
    td.textContent = name;
    tr.appendChild(td);
    for (const [label, on] of [["inject", true], ["clear", false]]) {
      const cell = document.createElement("td");
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = `${label} ${name}`;
      b.dataset.fault = name;
      b.addEventListener("click", () =>
        post(`/api/lanes/${id}/fault`, { name, on, value: name.endsWith("slow_reply") ? 0.8 : 0 }));
      cell.appendChild(b);
      tr.appendChild(cell);
    }
    tbody.appendChild(tr);
  }
  document.getElementById("lanes").appendChild(root);
  const card = { root, framePlate: undefined };
  cards.set(id, card);
  return card;
}

function setList(ul, items, make) {
  ul.replaceChildren(...items.map((x) => { const li = document.createElement("li"); make(li, x); return li; }));
}

function render(state) {
  for (const [id, lane] of Object.entries(state.lanes)) {
    const card = cards.get(id) || makeCard(id, lane, state.faults);
    const r = card.root;
    const mb = lane.modbus;
    el(r, ".arm").textContent = `${mb.arm.motion} (${Math.round(mb.arm.position * 100)}%)`;
    el(r, ".arm-pos").value = mb.arm.position;
    el(r, ".loops").textContent = ["arming", "closing", "photocell"]
      .map((k) => `${k} ${mb.loops[k] ? "●" : "○"}`).join("  ");
    el(r, ".relays").textContent = Object.entries(mb.relays)
      .filter(([, v]) => v).map(([k]) => k).join(", ") || "none";
    el(r, ".current").textContent = lane.current_plate || "—";
    const disp = lane.display;
    setList(el(r, ".display"), disp ? disp.screen : [], (li, text) => {
      li.textContent = text;
    });
    if (disp) {
      el(r, ".display").querySelectorAll("li").forEach((li, i) => {
        li.className = disp.colours[i] || "";
      });
    }
    el(r, ".spoken").textContent = disp && disp.spoken.length ? disp.spoken[disp.spoken.length - 1] : "";
    const d = lane.daemon;
    el(r, ".daemon").textContent = d == null ? "(no --lane-socket)"
      : d.ok === false ? `unreachable: ${d.error}`
      : `${d.state}${d.faults && d.faults.length ? " · faults " + d.faults.join(",") : ""}` +
        `${d.current ? " · " + d.current.plate + " " + d.current.outcome : ""}`;
    el(r, ".outcomes").textContent = lane.outcomes.slice(-4).map((o) => `${o.plate} ${o.result}`).join(", ");
    setList(el(r, ".active-faults"), lane.active_faults, (li, name) => { li.textContent = name; });
    const shown = lane.current_plate || null;
    if (card.framePlate !== shown) {
      card.framePlate = shown;
      el(r, ".frame").src = `/api/lanes/${id}/frame.jpg?plate=${encodeURIComponent(shown || "")}`;
    }
  }
  const led = state.ledger;
  document.getElementById("ledger-box").hidden = !led;
  if (led) {
    document.getElementById("ledger-path").textContent = led.error ? `${led.path}: ${led.error}` : led.path;
    const rows = led.entries.map((e) => {
      const tr = document.createElement("tr");
      for (const v of [e.lane_id, e.seq, e.kind, e.at, e.plate || "", JSON.stringify(e.payload)]) {
        const td = document.createElement("td");
        td.textContent = String(v).slice(0, 120);
        tr.appendChild(td);
      }
      return tr;
    });
    document.querySelector("#ledger tbody").replaceChildren(...rows);
  }
  if (state.errors.length) showErrors(state.errors);
}

async function poll() {
  const conn = document.getElementById("conn");
  try {
    const resp = await fetch("/api/state", { cache: "no-store" });
    render(await resp.json());
    conn.textContent = "live";
    conn.className = "conn";
  } catch (err) {
    conn.textContent = "simulator unreachable";
    conn.className = "conn bad";
  }
  setTimeout(poll, POLL_MS);
}

poll();
