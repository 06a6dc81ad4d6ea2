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
