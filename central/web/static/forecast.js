// The campaign forecast chart: per month, the extra points the campaign would have issued
// (with minus without, over the period's real purchases) and their cost.
(function () {
  "use strict";
  var el = document.getElementById("fc-data");
  if (!el || !window.Chart) { return; }
  var d = JSON.parse(el.textContent), f = d.fc;
  var extra = f.with_campaign.map(function (w, i) { return w - f.base[i]; });
  var cpp = f.extra_points ? Number(f.extra_cost) / f.extra_points : 0;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  new Chart(document.getElementById("ch-forecast"), {
    data: { labels: f.months, datasets: [
      { type: "bar", label: d.extra, data: extra, backgroundColor: "#D55E00", yAxisID: "y",
        pointStyle: "rect", order: 2 },
      { type: "line", label: d.cost, data: extra.map(function (x) { return +(x * cpp).toFixed(2); }),
        borderColor: "#0072B2", backgroundColor: "#0072B2", borderDash: [6, 4],
        pointStyle: "circle", pointRadius: 5, yAxisID: "y1", order: 1 } ] },
    options: { plugins: { legend: { labels: { usePointStyle: true } } },
               scales: { y: { beginAtZero: true, title: { display: true, text: d.points } },
                         y1: { beginAtZero: true, position: "right", grid: { drawOnChartArea: false },
                               title: { display: true, text: "¥" } } } }
  });
  document.body.setAttribute("data-charts", "ready");
})();
