// The overview's charts (Chart.js, served by central). Data comes from the page itself
// (#fig-data), so nothing is fetched and the numbers equal the server's table view.
(function () {
  "use strict";
  var el = document.getElementById("fig-data");
  if (!el || !window.Chart) { return; }
  var d = JSON.parse(el.textContent), f = d.fig, L = d.labels;
  // Okabe-Ito palette (safe for colour-blind readers); series also differ by pattern/dash.
  var C = ["#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00"];
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.plugins.legend.labels.usePointStyle = true;
  var styles = ["circle", "rectRot", "triangle", "rect"];

  function stacked(id, series, labels, order) {
    // a fixed order (the embedded JSON's keys are sorted); an all-zero series is left out
    var keys = order.filter(function (k) {
      return (series[k] || []).some(function (v) { return v !== 0; }) || k === order[0];
    });
    new Chart(document.getElementById(id), {
      type: "bar",
      data: { labels: f.months, datasets: keys.map(function (k, i) {
        return { label: labels[k], data: series[k], backgroundColor: C[i], pointStyle: styles[i],
                 borderColor: "#fff", borderWidth: 1 };
      }) },
      options: { scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true,
                 title: { display: true, text: L.points } } } }
    });
  }
  stacked("ch-issued", f.issued, L.issued, ["parking", "shop", "campaign", "adjustment"]);
  stacked("ch-redeemed", f.redeemed, L.redeemed, ["parking", "rewards"]);

  new Chart(document.getElementById("ch-cost"), {
    type: "line",
    data: { labels: f.months, datasets: [
      { label: L.cost, data: f.cost_of_points.map(Number), borderColor: C[5], backgroundColor: C[5],
        pointStyle: "rect", pointRadius: 5 },
      { label: L.value, data: f.value_redeemed.map(Number), borderColor: C[0], backgroundColor: C[0],
        borderDash: [6, 4], pointStyle: "circle", pointRadius: 5 } ] },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: "¥ (" + L.yuan + ")" } } } }
  });

  new Chart(document.getElementById("ch-popular"), {
    type: "bar",
    data: { labels: f.popular.map(function (p) { return L.kinds[p.kind] || p.kind; }),
            datasets: [{ label: L.redemptions, data: f.popular.map(function (p) { return p.count; }),
                         backgroundColor: C[2] }] },
    options: { indexAxis: "y", plugins: { legend: { display: false } },
               scales: { x: { beginAtZero: true, ticks: { precision: 0 } } } }
  });

  new Chart(document.getElementById("ch-visits"), {
    data: { labels: f.visits.map(function (v) { return v.visits; }), datasets: [
      { type: "bar", label: L.members, data: f.visits.map(function (v) { return v.members; }),
        backgroundColor: C[4], yAxisID: "y", order: 2 },
      { type: "line", label: L.avg_points, data: f.visits.map(function (v) { return v.avg_points; }),
        borderColor: C[1], backgroundColor: C[1], borderDash: [6, 4], pointStyle: "triangle",
        pointRadius: 6, yAxisID: "y1", order: 1 } ] },
    options: { scales: {
      x: { title: { display: true, text: L.visits } },
      y: { beginAtZero: true, position: "left", title: { display: true, text: L.members }, ticks: { precision: 0 } },
      y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false },
            title: { display: true, text: L.avg_points } } } }
  });
  document.body.setAttribute("data-charts", "ready");
})();
