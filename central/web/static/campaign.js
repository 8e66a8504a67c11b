// A published campaign's chart: the points it gave per day of its window (bars) and, beside
// them, its visits and members' spend against the same-length window before.
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
    type: "bar",
    data: { labels: [d.visits, d.spend], datasets: [
      { label: d.before, data: [f.visits_before, Number(f.spend_before)],
        backgroundColor: "#999999" },
      { label: d.during, data: [f.visits, Number(f.spend)], backgroundColor: "#0072B2" } ] },
    options: { scales: { y: { beginAtZero: true, type: "logarithmic" } } }
  });
  document.body.setAttribute("data-charts", "ready");
})();
