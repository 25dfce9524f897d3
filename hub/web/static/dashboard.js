/* Draws the dashboard's charts from the JSON the page carries (Chart.js, served by the hub). */
(function () {
  "use strict";
  var data = JSON.parse(document.getElementById("dashboard-data").textContent);
  var palette = ["#2b6cb0", "#2f855a", "#b7791f", "#c53030", "#6b46c1", "#2c7a7b", "#975a16", "#4a5568", "#d53f8c"];
  var stageColours = {new: "#3182ce", engaged: "#38a169", loyal: "#805ad5", at_risk: "#dd6b20", churned: "#a0aec0", unknown: "#cbd5e0"};
  var stageNames = {new: "New", engaged: "Engaged", loyal: "Loyal", at_risk: "At risk", churned: "Churned", unknown: "Not assessed"};
  var tools = {klaviyo: "Klaviyo", hubspot: "HubSpot", activecampaign: "ActiveCampaign", webhook: "Outbound webhook"};
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  Chart.defaults.font.family = "system-ui, -apple-system, 'Segoe UI', Roboto, sans-serif";

  function chart(id, config) {
    var canvas = document.getElementById(id);
    if (canvas) { canvas.chart = new Chart(canvas, config); }
  }
  function percentAxis() {
    return {beginAtZero: true, suggestedMax: 100, ticks: {callback: function (v) { return v + "%"; }}};
  }

  var stages = data.stages;
  chart("chart-stages", {
    type: "line",
    data: {labels: stages.labels, datasets: Object.keys(stages.series).filter(function (k) {
      return stages.series[k].some(function (v) { return v; }) || stageNames[k];
    }).map(function (k) {
      return {label: stageNames[k] || k, data: stages.series[k], fill: true, pointRadius: 0,
              borderColor: stageColours[k] || "#718096", backgroundColor: (stageColours[k] || "#718096") + "99"};
    })},
    options: {scales: {y: {stacked: true, beginAtZero: true, title: {display: true, text: "subscribers"}}},
              interaction: {mode: "index", intersect: false}}
  });

  var mrr = data.mrr;
  chart("chart-mrr", {
    data: {labels: mrr.labels, datasets: [
      {type: "line", label: "MRR", data: mrr.mrr, borderColor: "#1a202c", backgroundColor: "#1a202c", yAxisID: "y", tension: 0.2},
      {type: "bar", label: "New", data: mrr.new, backgroundColor: "#38a169", yAxisID: "y1", stack: "m"},
      {type: "bar", label: "Expansion", data: mrr.expansion, backgroundColor: "#3182ce", yAxisID: "y1", stack: "m"},
      {type: "bar", label: "Contraction", data: mrr.contraction, backgroundColor: "#dd6b20", yAxisID: "y1", stack: "m"},
      {type: "bar", label: "Churn", data: mrr.churn, backgroundColor: "#c53030", yAxisID: "y1", stack: "m"}
    ]},
    options: {scales: {
      y: {position: "left", beginAtZero: true, title: {display: true, text: "MRR (" + mrr.currency + ")"}},
      y1: {position: "right", stacked: true, grid: {drawOnChartArea: false}, title: {display: true, text: "moved in the month"}},
      x: {stacked: true}}, interaction: {mode: "index", intersect: false}}
  });

  // The rate as a line; beside it, the month's cancellations split by why they happened.
  chart("chart-churn", {
    data: {labels: data.churn.labels, datasets: [
      {type: "line", label: "Churn rate", data: data.churn.rate, borderColor: "#c53030", backgroundColor: "#c53030",
       yAxisID: "y", spanGaps: true},
      {type: "bar", label: "Cancelled: voluntary", data: data.churn.voluntary, backgroundColor: "#f6ad55", yAxisID: "y1", stack: "c"},
      {type: "bar", label: "Cancelled: failed payment", data: data.churn.involuntary, backgroundColor: "#9b2c2c", yAxisID: "y1", stack: "c"}
    ]},
    options: {scales: {y: Object.assign(percentAxis(), {title: {display: true, text: "churn rate (%)"}}),
      y1: {position: "right", stacked: true, beginAtZero: true, grace: "50%", grid: {drawOnChartArea: false},
           ticks: {precision: 0}, title: {display: true, text: "cancellations"}}, x: {stacked: true}},
      plugins: {tooltip: {callbacks: {afterLabel: function (c) {
        return c.dataset.yAxisID === "y"
          ? data.churn.churned[c.dataIndex] + " lost of " + data.churn.paying_at_start[c.dataIndex] + " paying" : "";
      }}}}}
  });

  var rec = data.recovery;
  chart("chart-recovery", {
    data: {labels: rec.labels, datasets: [
      {type: "line", label: "Recovered (%)", data: rec.rate, borderColor: "#2f855a", backgroundColor: "#2f855a", yAxisID: "y", spanGaps: true},
      {type: "bar", label: "Failed payments", data: rec.failed, backgroundColor: "#fc8181", yAxisID: "y1"},
      {type: "bar", label: "Recovered", data: rec.recovered, backgroundColor: "#68d391", yAxisID: "y1"}
    ]},
    options: {scales: {y: Object.assign(percentAxis(), {title: {display: true, text: "recovered (%)"}}),
      y1: {position: "right", beginAtZero: true, grace: "50%",
      grid: {drawOnChartArea: false}, ticks: {precision: 0}, title: {display: true, text: "payments"}}}}
  });

  var names = Object.keys(data.reminders.series);
  chart("chart-reminders", {
    type: "bar",
    data: {labels: data.reminders.labels, datasets: names.map(function (n, i) {
      return {label: n, data: data.reminders.series[n], backgroundColor: palette[i % palette.length]};
    })},
    options: {scales: {x: {stacked: true}, y: {stacked: true, beginAtZero: true, ticks: {precision: 0}}}}
  });

  // Each row's total written at the end of its bar, zero included: a queue of 0 is good
  // news to read, not an empty box.
  var rowTotals = {id: "rowTotals", afterDatasetsDraw: function (c) {
    var last = c.getDatasetMeta(c.data.datasets.length - 1);
    var ctx = c.ctx;
    ctx.save();
    ctx.fillStyle = "#1a202c";
    ctx.font = "600 13px " + Chart.defaults.font.family;
    ctx.textBaseline = "middle";
    c.data.labels.forEach(function (_, i) {
      var total = c.data.datasets.reduce(function (n, ds) { return n + (ds.data[i] || 0); }, 0);
      if (last.data[i]) { ctx.fillText(total.toLocaleString("en"), last.data[i].x + 6, last.data[i].y); }
    });
    ctx.restore();
  }};
  var q = data.connectors;
  var queueNames = q.names.length ? q.names.map(function (n) { return tools[n] || n; }) : ["No tool connected"];
  function counts(values) { return q.names.length ? values : [0]; }
  chart("chart-queues", {
    type: "bar",
    data: {labels: queueNames, datasets: [
      {label: "Waiting to be sent", data: counts(q.queued), backgroundColor: "#63b3ed"},
      {label: "Waiting to retry", data: counts(q.retrying), backgroundColor: "#f6ad55"},
      {label: "Gave up", data: counts(q.dead), backgroundColor: "#e53e3e"}
    ]},
    plugins: [rowTotals],
    options: {indexAxis: "y", layout: {padding: {right: 40}},
              scales: {x: {stacked: true, beginAtZero: true, suggestedMax: 1, ticks: {precision: 0},
                           title: {display: true, text: "deliveries"}}, y: {stacked: true}}}
  });

  var err = data.errors;
  chart("chart-errors", {
    type: "line",
    data: {labels: err.labels, datasets: Object.keys(err.series).map(function (n, i) {
      return {label: (tools[n] || n) + " (" + err.failures[n] + " of " + err.attempts[n] + " attempts)", data: err.series[n],
              borderColor: palette[i % palette.length], backgroundColor: palette[i % palette.length], spanGaps: true};
    })},
    options: {scales: {y: percentAxis()}}
  });
  // The cells' shade, set here: the Content-Security-Policy refuses style attributes in the page.
  Array.prototype.forEach.call(document.querySelectorAll("td.heat[data-pct]"), function (td) {
    td.style.setProperty("--pct", td.getAttribute("data-pct"));
  });
  document.documentElement.setAttribute("data-charts", "drawn");
})();
