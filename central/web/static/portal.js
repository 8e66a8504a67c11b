// Member portal: the live balance (server-sent events from /m/events) and the two-tap
// redeem (the reward's button reveals its confirm button; without JS the <details> opens).
(function () {
  "use strict";
  var bal = document.getElementById("balance"), sp = document.getElementById("spendable");
  var live = document.getElementById("live");
  function fmt(n) { return Number(n).toLocaleString("en-US"); }
  if (bal && window.EventSource) {
    var es = new EventSource("/m/events");
    es.addEventListener("balance", function (e) {
      var d = JSON.parse(e.data);
      if (live) { live.hidden = false; }
      if (String(d.balance) !== bal.getAttribute("data-balance")) {
        bal.setAttribute("data-balance", String(d.balance));
        bal.textContent = fmt(d.balance);
        bal.classList.remove("flash"); void bal.offsetWidth; bal.classList.add("flash");
      }
      if (sp) { sp.textContent = fmt(d.spendable); }
    });
    es.onerror = function () { if (live) { live.hidden = true; } };
  }
  document.querySelectorAll(".rewards details").forEach(function (det) {
    det.addEventListener("toggle", function () {
      var form = det.closest("li").querySelector("form.confirm");
      if (form) { form.hidden = !det.open; if (det.open) { form.querySelector("button").focus(); } }
    });
  });
})();
