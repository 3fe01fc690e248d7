/* 村响 console: a little plain JavaScript. Pages work without it; it adds checks in the page,
   keeps typed text across an expired login, the area search and the speech preview. */
(function () {
  "use strict";
  var STASH = "cx-form:";
  var csrf = (document.querySelector('meta[name="csrf-token"]') || {}).content || "";

  function fields(form) {
    var data = {};
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || el.type === "hidden" || el.type === "password" || el.type === "submit") return;
      if (el.type === "checkbox" || el.type === "radio") {
        if (!data[el.name]) data[el.name] = [];
        if (el.checked) data[el.name].push(el.value);
      } else {
        data[el.name] = el.value;
      }
    });
    return data;
  }

  function restore(form, data) {
    Array.prototype.forEach.call(form.elements, function (el) {
      if (!el.name || !(el.name in data) || el.type === "hidden") return;
      var value = data[el.name];
      if (el.type === "checkbox" || el.type === "radio") el.checked = value.indexOf(el.value) >= 0;
      else el.value = value;
    });
  }

  function stash(form) {
    try { sessionStorage.setItem(STASH + form.dataset.keep, JSON.stringify(fields(form))); } catch (e) { /* private mode */ }
  }

  // Chinese messages for the browser's own checks.
  function message(el) {
    var v = el.validity;
    if (v.valueMissing) return el.dataset.msgRequired || "请填写此项";
    if (v.patternMismatch) return el.dataset.msgPattern || "格式不对";
    if (v.rangeUnderflow || v.rangeOverflow) return el.dataset.msgRange || "数值超出范围";
    if (v.tooLong) return "内容太长";
    if (v.badInput || v.typeMismatch) return "格式不对";
    return "";
  }
  document.addEventListener("invalid", function (ev) {
    var el = ev.target;
    el.setCustomValidity("");
    if (!el.validity.valid) el.setCustomValidity(message(el));
  }, true);
  document.addEventListener("input", function (ev) {
    if (ev.target.setCustomValidity) ev.target.setCustomValidity("");
  }, true);

  document.addEventListener("submit", function (ev) {
    var form = ev.target;
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) { ev.preventDefault(); return; }
    if (form.dataset.keep) stash(form);
  }, true);

  if (document.body.dataset.clearStash) {
    try { sessionStorage.removeItem(STASH + document.body.dataset.clearStash); } catch (e) { /* ignore */ }
  }

  // What used to be inline handlers (the Content-Security-Policy allows no inline script).
  document.addEventListener("change", function (e) {
    var el = e.target;
    if (el.matches && el.matches("select[data-autosubmit]") && el.form) el.form.submit();
  });
  document.addEventListener("click", function (e) {
    var el = e.target.closest && e.target.closest("[data-print], a[data-back]");
    if (!el) return;
    if (el.hasAttribute("data-print")) {
      window.print();
    } else if (window.history.length > 1) {
      e.preventDefault();
      window.history.back();
    }
  });

  var compose = document.getElementById("compose");
  if (!compose) return;

  // Restore what was typed before an expired login sent the user away (only into an empty form).
  try {
    var saved = sessionStorage.getItem(STASH + compose.dataset.keep);
    var data = saved ? JSON.parse(saved) : null;
    var typed = data && ((data.title || "").trim() || (data.text || "").trim());
    if (typed && !document.getElementById("form-errors") &&
        !compose.elements.title.value && !compose.elements.text.value) {
      restore(compose, data);
      var note = document.createElement("p");
      note.className = "ok"; note.id = "restored";
      note.textContent = "已恢复您上次填写但未提交成功的内容。";
      compose.parentNode.insertBefore(note, compose);
    }
    sessionStorage.removeItem(STASH + compose.dataset.keep);
  } catch (e) { /* ignore */ }

  var text = compose.elements.text, counter = document.getElementById("char-count");
  function count() { counter.textContent = text.value.length; }
  text.addEventListener("input", count); count();

  // Schedule fields: show those of the chosen mode, and require them.
  function modeChanged() {
    var checked = compose.querySelector('input[name="mode"]:checked');
    var mode = checked ? checked.value : "now";
    Array.prototype.forEach.call(compose.querySelectorAll("[data-mode]"), function (box) {
      var on = box.dataset.mode.split(" ").indexOf(mode) >= 0;
      box.hidden = !on;
      Array.prototype.forEach.call(box.querySelectorAll('input[name="start_local"], input[name="times"]'), function (el) {
        el.required = on;
      });
    });
  }
  compose.addEventListener("change", function (ev) { if (ev.target.name === "mode") modeChanged(); });
  modeChanged();

  // Area tree: search by name, list what is picked.
  var tree = document.getElementById("area-tree"), search = document.getElementById("area-search");
  var picked = document.getElementById("area-picked");
  function showPicked() {
    var names = Array.prototype.map.call(tree.querySelectorAll('input[name="areas"]:checked'), function (el) {
      return el.dataset.name;
    });
    picked.textContent = names.length ? names.join("、") : "（未选）";
  }
  tree.addEventListener("change", showPicked);
  function filter(node, q) {
    // returns true if node or a descendant matches
    if (node.tagName === "LABEL") {
      var hit = !q || node.dataset.name.indexOf(q) >= 0;
      node.hidden = !hit;
      return hit;
    }
    var own = !q || node.dataset.name.indexOf(q) >= 0;
    var kids = node.querySelector(".kids"), any = false;
    Array.prototype.forEach.call(kids.children, function (child) { if (filter(child, own ? "" : q)) any = true; });
    node.hidden = !(own || any);
    if (q) node.open = any || own; else node.open = node.parentNode === tree;
    return own || any;
  }
  search.addEventListener("input", function () {
    var q = search.value.trim();
    Array.prototype.forEach.call(tree.children, function (n) { filter(n, q); });
  });
  search.addEventListener("keydown", function (ev) { if (ev.key === "Enter") ev.preventDefault(); });

  // Preview: synthesise on the server, play it here.
  var button = document.getElementById("preview-btn"), status = document.getElementById("preview-status");
  var audio = document.getElementById("preview-audio");
  button.addEventListener("click", function () {
    if (!text.value.trim()) { status.textContent = "请先填写广播正文。"; text.focus(); return; }
    button.disabled = true; status.textContent = "正在合成语音……";
    fetch("/console/preview", {
      method: "POST", credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json", "X-CSRF-Token": csrf},
      // The same fields the form submits: the server reads both through one ComposeForm.speech.
      body: JSON.stringify({text: text.value, voice: compose.elements.voice.value, rate: compose.elements.rate.value,
                            repeat: compose.elements.repeat.value, chime: compose.elements.chime.checked,
                            closing_chime: compose.elements.closing_chime.checked})
    }).then(function (r) {
      return r.json().then(function (body) { return {status: r.status, body: body}; });
    }).then(function (res) {
      if (res.status === 401 && res.body.login) { stash(compose); window.location = res.body.login; return; }
      if (res.status !== 200) { status.textContent = res.body.detail || "试听失败。"; return; }
      audio.src = res.body.url; audio.hidden = false;
      // Sent back on submit: the server airs this asset if text and settings still match it.
      compose.elements.previewed_asset_id.value = res.body.asset_id;
      status.textContent = "时长 " + (res.body.duration_ms / 1000).toFixed(1) + " 秒" +
        (res.body.fallback ? "（在线语音不可用，已改用离线语音）" : "");
      var p = audio.play(); if (p && p.catch) p.catch(function () { /* autoplay blocked: the user presses play */ });
    }).catch(function () { status.textContent = "网络错误，试听失败。"; })
      .then(function () { button.disabled = false; });
  });
})();
