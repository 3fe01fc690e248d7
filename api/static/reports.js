/* 村响 console: the period report's charts, drawn in the page from GET /api/v1/reports/reach —
   the JSON the API clients get — with the page's own query and the session cookie. The KPIs, the
   table and the exports beside them come from the same service function on the server. */
(function () {
  "use strict";
  var box = document.getElementById("reach-charts");
  if (!box) return;
  var SVG = "http://www.w3.org/2000/svg";
  var BAR_W = 520; // the longest bar, as BAR_W in api/web/reports.py (the broadcast report's chart)
  var LABELS = {played: "完整播放", failed: "播放失败", no_report: "无回报", other: "其他"};
  var status = document.getElementById("chart-status");

  function node(name, attrs, text) {
    var el = document.createElementNS(SVG, name);
    Object.keys(attrs).forEach(function (k) { el.setAttribute(k, attrs[k]); });
    if (text !== undefined) el.textContent = text;
    return el;
  }
  function percent(v) { return v === null || v === undefined ? "—" : (v * 100).toFixed(1) + "%"; }
  function round1(v) { return Math.round(v * 10) / 10; }
  function widest(items) {
    return items.reduce(function (m, e) { return Math.max(m, e.targeted); }, 0) || 1;
  }

  // Stacked bars per area: played / failed / no report / other (skipped, preempted, not final).
  function areaChart(byArea) {
    var scale = widest(byArea);
    var svg = node("svg", {"class": "chart", viewBox: "0 0 760 " + (28 * byArea.length + 10), width: 760,
                           role: "img", "aria-label": "各区域到达情况"});
    byArea.forEach(function (e, i) {
      var y = 5 + i * 28, x = 0;
      var row = node("g", {"class": "bar", "data-code": e.code});
      row.appendChild(node("text", {x: 150, y: y + 15, "text-anchor": "end", "class": "lbl"}, e.name));
      [["played", e.played], ["failed", e.failed], ["no_report", e.no_report],
       ["other", e.other]].forEach(function (seg) {
        var w = BAR_W * seg[1] / scale;
        if (seg[1] > 0) {
          var rect = node("rect", {x: round1(160 + x), y: y, width: round1(w), height: 20,
                                   "class": "seg-" + seg[0], "data-key": seg[0], "data-n": seg[1]});
          rect.appendChild(node("title", {}, LABELS[seg[0]] + " " + seg[1]));
          row.appendChild(rect);
        }
        x += w;
      });
      row.appendChild(node("text", {x: round1(166 + x), y: y + 15, "class": "val"}, percent(e.reach_rate)));
      svg.appendChild(row);
    });
    return svg;
  }

  // Columns per day: targeted (light) behind played (dark).
  function dayChart(byDay) {
    var tallest = widest(byDay), step = Math.min(60, 640 / Math.max(byDay.length, 1));
    var width = round1(60 + byDay.length * step);
    var svg = node("svg", {"class": "chart", viewBox: "0 0 " + width + " 200", width: width, role: "img",
                           "aria-label": "每日播放情况"});
    svg.appendChild(node("line", {x1: 35, y1: 170, x2: width, y2: 170, "class": "axis"}));
    byDay.forEach(function (d, i) {
      var x = round1(40 + i * step), w = round1(step * 0.7);
      var t = round1(160 * d.targeted / tallest), p = round1(160 * d.played / tallest);
      var col = node("g", {"class": "day", "data-day": d.day, "data-targeted": d.targeted, "data-played": d.played});
      var bg = node("rect", {x: x, y: 170 - t, width: w, height: t, "class": "col-targeted"});
      bg.appendChild(node("title", {}, "目标 " + d.targeted));
      var fg = node("rect", {x: x, y: 170 - p, width: w, height: p, "class": "col-played"});
      fg.appendChild(node("title", {}, "完整播放 " + d.played));
      col.appendChild(bg); col.appendChild(fg);
      if (byDay.length <= 10 || i % 5 === 0) {
        col.appendChild(node("text", {x: x + w / 2, y: 186, "text-anchor": "middle", "class": "lbl small"},
                             d.day.slice(5)));
      }
      svg.appendChild(col);
    });
    svg.appendChild(node("text", {x: 30, y: 14, "text-anchor": "end", "class": "lbl small"}, String(tallest)));
    return svg;
  }

  function failed(message) {
    status.textContent = message;
    box.dataset.state = "error";
  }

  status.textContent = "正在载入图表……";
  fetch(box.dataset.src, {credentials: "same-origin", headers: {"Accept": "application/json"}})
    .then(function (r) {
      return r.json().then(function (body) { return {status: r.status, body: body}; });
    })
    .then(function (res) {
      if (res.status === 401) {
        failed("登录已过期，请刷新页面重新登录后查看图表。");
        return;
      }
      if (res.status !== 200) {
        var detail = res.body && res.body.detail;
        failed("图表载入失败：" + (typeof detail === "string" ? detail : "HTTP " + res.status));
        return;
      }
      var r = res.body;
      if (r.by_day.length > 1) {
        document.getElementById("chart-days").appendChild(dayChart(r.by_day));
        document.getElementById("chart-days-card").hidden = false;
      }
      if (r.by_area.length) {
        document.getElementById("chart-areas").appendChild(areaChart(r.by_area));
        status.textContent = "";
      } else {
        status.textContent = "暂无播放记录。";
      }
      box.dataset.state = "drawn";
    })
    .catch(function () { failed("网络错误，图表未能载入。"); });
})();
