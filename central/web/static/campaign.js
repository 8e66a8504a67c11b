// A published campaign's chart: the points it gave per day of its window (bars) and, beside
// them, its visits (bars) and members' spend (dashed line, right axis) in the same-length
// window before and during it.
(function () {
  "use strict";
  var el = document.getElementById("cf-data");
  if (!el || !window.Chart) { return; }
  var d = JSON.parse(el.textContent), f = d.f;
  Chart.defaults.font.family = getComputedStyle(document.body).fontFamily;
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  new Chart(document.getElementById("ch-campaign-days"), {
    type: "bar",
    data: { labels: f.days, datasets: [
      { label: d.given, data: f.points_by_day, backgroundColor: "#D55E00" } ] },
    options: { scales: { y: { beginAtZero: true, title: { display: true, text: d.points } } } }
  });
  new Chart(document.getElementById("ch-campaign-compare"), {
    data: { labels: [d.before, d.during], datasets: [
      { type: "bar", label: d.visits, data: [f.visits_before, f.visits],
        backgroundColor: "#0072B2", yAxisID: "y", order: 2 },
      { type: "line", label: d.spend, data: [Number(f.spend_before), Number(f.spend)],
        borderColor: "#D55E00", backgroundColor: "#D55E00", borderDash: [6, 4],
        pointStyle: "rect", pointRadius: 6, yAxisID: "y1", order: 1 } ] },
    options: { plugins: { legend: { labels: { usePointStyle: true } } },
               scales: { y: { beginAtZero: true, title: { display: true, text: d.visits } },
                         y1: { beginAtZero: true, position: "right",
                               grid: { drawOnChartArea: false },
                               title: { display: true, text: d.spend } } } }
  });
  document.body.setAttribute("data-charts", "ready");
})();
