// asynq-aio dashboard: refresh the figures of the open page without reloading it.
// Every element with data-live="<field>" inside an element with data-queue="<queue>" shows that
// queue's field from the stats endpoint (named in <meta name="asynq-stats">). Polling pauses while
// the tab is hidden, slows down after errors, and waits at least five times as long as the last
// refresh took (with a thousand queues a refresh takes seconds: one open tab must not keep the
// dashboard's process busy).
(function () {
  "use strict";
  var meta = function (name) {
    var el = document.querySelector('meta[name="' + name + '"]');
    return el ? el.getAttribute("content") : null;
  };
  var url = meta("asynq-stats");
  var every = parseInt(meta("asynq-refresh-ms") || "5000", 10);
  var status = document.getElementById("live-status");
  if (!url || !document.querySelector("[data-live]")) return;
  var failures = 0;
  var lastTook = 0;

  function apply(stats) {
    document.querySelectorAll("[data-queue]").forEach(function (scope) {
      var figures = stats.queues[scope.getAttribute("data-queue")];
      if (!figures) return;
      scope.querySelectorAll("[data-live]").forEach(function (el) {
        var value = figures[el.getAttribute("data-live")];
        if (value === undefined) return;
        var text = String(value);
        if (el.textContent !== text) el.textContent = text;
        if (el.getAttribute("data-live") === "paused") {
          var badge = el.classList.contains("badge") ? el : el.closest(".badge");
          if (badge) {
            badge.classList.toggle("paused", text === "paused");
            badge.classList.toggle("running", text !== "paused");
          }
        }
      });
    });
  }

  function tick() {
    if (document.hidden) return schedule();
    var started = Date.now();
    fetch(url, { headers: { Accept: "application/json" }, credentials: "same-origin" })
      .then(function (resp) {
        if (!resp.ok) throw new Error("HTTP " + resp.status);
        return resp.json();
      })
      .then(function (stats) {
        apply(stats);
        failures = 0;
        if (status) status.textContent = "";
        document.documentElement.setAttribute("data-refreshed", stats.time || "");
      })
      .catch(function () {
        failures += 1;
        if (status && failures === 2) status.textContent = " (refresh failing: figures may be stale)";
      })
      .then(function () {
        lastTook = Date.now() - started;
        schedule();
      });
  }

  function schedule() {
    setTimeout(tick, Math.max(every * Math.min(1 + failures, 6), lastTook * 5));
  }

  schedule();
})();
