// The operations page stays current by itself: every few seconds it fetches /ops/live (the
// same server-rendered part the page was built with) and swaps it in, then redraws the two
// charts from the JSON inside it. A lost session (the fetch lands on the sign-in page)
// reloads the page, which asks to sign in again.
(function () {
  "use strict";
  var live = document.getElementById("ops-live");
  if (!live) { return; }
  var every = (parseInt(live.getAttribute("data-refresh-s"), 10) || 5) * 1000;
  var L = JSON.parse(document.getElementById("ops-labels").textContent);
  var C = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];
  var styles = ["circle", "rectRot", "triangle", "rect"];
  var occ = null, money = null;
  if (window.Chart) {
    Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
    Chart.defaults.animation = false;
    Chart.defaults.maintainAspectRatio = false;
  }

  function data() { return JSON.parse(document.getElementById("ops-data").textContent); }

  function draw() {
    if (!window.Chart) { return; }
    var d = data(), sites = Object.keys(d.occupancy), hours = [];
    sites.forEach(function (s) { if (d.occupancy[s].hours.length > hours.length) { hours = d.occupancy[s].hours; } });
    var sets = sites.map(function (s, i) {
      return { label: L.vehicles + " · " + s, data: d.occupancy[s].by_hour, borderColor: C[i % 6],
               backgroundColor: C[i % 6], pointStyle: styles[i % 4], pointRadius: 4, stepped: false };
    });
    if (!occ) {
      occ = new Chart(document.getElementById("ch-occupancy"), { type: "line",
        data: { labels: hours, datasets: sets },
        options: { scales: { y: { beginAtZero: true, ticks: { precision: 0 },
                                  title: { display: true, text: L.vehicles } } } } });
    } else { occ.data.labels = hours; occ.data.datasets = sets; occ.update(); }
    var amounts = d.money.amounts.map(Number);
    if (!money) {
      money = new Chart(document.getElementById("ch-money"), { type: "bar",
        data: { labels: d.money.days, datasets: [{ label: "¥ (" + L.yuan + ")", data: amounts,
                                                   backgroundColor: C[2] }] },
        options: { plugins: { legend: { display: false } }, scales: { y: { beginAtZero: true } } } });
    } else { money.data.labels = d.money.days; money.data.datasets[0].data = amounts; money.update(); }
  }

  var busy = false;
  function refresh() {
    if (busy) { return; }
    busy = true;
    fetch("/ops/live", { credentials: "same-origin", cache: "no-store" }).then(function (r) {
      if (!r.ok || r.redirected) { window.location.reload(); return null; }
      return r.text();
    }).then(function (html) {
      if (html === null) { return; }
      var open = {};  // keep the money table open if the reader opened it
      live.querySelectorAll("details[id], details.table-view").forEach(function (el, i) { open[i] = el.open; });
      var before = live.querySelector("#ops-counts").textContent;
      live.innerHTML = html;
      var after = live.querySelector("#ops-counts").textContent;
      if (after !== before) { document.getElementById("ops-announce").textContent = after; }
      live.querySelectorAll("details[id], details.table-view").forEach(function (el, i) { if (open[i]) { el.open = true; } });
      draw();
    }).catch(function () { /* central unreachable: keep the last picture, try again */ })
      .then(function () { busy = false; });
  }

  draw();
  window.setInterval(refresh, every);
  document.getElementById("ops-refresh").addEventListener("click", refresh);
})();
