// Ticketline console: draws the charts from the numbers on the page (Chartist). The
// tables beside each chart carry the same figures for screen readers and keyboards.
(function () {
  "use strict";
  function draw() {
    var source = document.getElementById("chart-data");
    if (!source || !window.Chartist) return;
    var data = JSON.parse(source.textContent);
    document.querySelectorAll("[data-chart]").forEach(function (el) {
      var kind = el.getAttribute("data-chart");
      if (kind === "rates") {
        var series = Object.keys(data.series).map(function (k) {
          return data.series[k].map(function (v) { return v === null ? null : v; });
        });
        var low = Math.min(0, Math.min.apply(null, series.flat().filter(function (v) { return v !== null; }).concat([0])));
        new Chartist.BarChart(el, { labels: data.labels, series: series },
          { high: 100, low: low, seriesBarDistance: 9, axisY: { onlyInteger: true } });
      } else if (kind === "bands") {
        var bands = Object.keys(data.bands).map(function (k) { return data.bands[k]; });
        new Chartist.BarChart(el, { labels: data.labels, series: bands },
          { stackBars: true, axisY: { onlyInteger: true } });
      } else if (kind === "alerts") {
        new Chartist.BarChart(el, { labels: data.labels, series: [data.series.alerts] },
          { horizontalBars: true, reverseData: true, axisX: { onlyInteger: true }, axisY: { offset: 140 } });
      }
    });
  }
  if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", draw);
  else draw();
})();

// Live updates: the note says when the stream is down (the sse extension reconnects by
// itself), and the live table keeps its newest rows only (a page left open all day).
(function () {
  "use strict";
  function note(el, open) {
    var region = el.closest ? el.closest(".live-region") || document : document;
    var status = region.querySelector("[data-live-status]") || document.querySelector("[data-live-status]");
    if (!status) return;
    var text = status.querySelector("[data-live-text]");
    if (!status.dataset.on) status.dataset.on = text.textContent;
    text.textContent = open ? status.dataset.on : status.dataset.off;
    status.classList.toggle("off", !open);
  }
  document.addEventListener("htmx:sseOpen", function (e) { note(e.target, true); });
  document.addEventListener("htmx:sseError", function (e) { note(e.target, false); });
  document.addEventListener("htmx:afterSwap", function (e) {
    var body = e.target;
    if (!body || body.id !== "live-events") return;
    var keep = parseInt(body.getAttribute("data-keep-rows"), 10) || 200;
    while (body.rows.length > keep) body.deleteRow(-1);
  });
})();
