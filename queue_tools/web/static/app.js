// The dashboard's own script: live rows and overview from /events (one stream shared by every
// tab, through live-worker.js), a job's output from its stream, and a slow refresh while the
// event stream is down. Text from a job is inserted as
// text (createTextNode); rows arrive as HTML the server rendered with every job string escaped.
(function () {
  "use strict";
  var SLOW_REFRESH_MS = 10000;
  var PAGE_ROWS = 50;  // as the server's pages (views.PAGE_ROWS)
  var slowTimer = null;

  function setLive(state, text) {
    var badge = document.getElementById("live-state");
    if (!badge) return;
    badge.className = "live-" + state;
    badge.textContent = text;
  }

  function jobsUrl() {
    var jobs = document.getElementById("jobs");
    if (!jobs) return null;
    var params = new URLSearchParams();
    params.set("state", jobs.dataset.state || "");
    params.set("q", jobs.dataset.q || "");
    return "/rows?" + params.toString();
  }

  function refreshAll() {
    var url = jobsUrl();
    var jobs = document.getElementById("jobs");
    if (url && jobs && jobs.dataset.first === "yes") {
      htmx.ajax("GET", url, { target: "#jobs", swap: "outerHTML" });
    }
    if (document.getElementById("overview")) {
      htmx.ajax("GET", "/overview", { target: "#overview", swap: "innerHTML" });
    }
  }

  function startSlowRefresh(text) {
    setLive("down", text);
    if (slowTimer === null) slowTimer = window.setInterval(refreshAll, SLOW_REFRESH_MS);
  }

  function stopSlowRefresh() {
    if (slowTimer !== null) {
      window.clearInterval(slowTimer);
      slowTimer = null;
      refreshAll();
    }
  }

  function rowFrom(html) {
    var template = document.createElement("template");
    template.innerHTML = html.trim();
    return template.content.firstElementChild;
  }

  function wanted(row) {
    var jobs = document.getElementById("jobs");
    if (!jobs || jobs.dataset.first !== "yes") return false;
    if (jobs.dataset.state && jobs.dataset.state !== row.dataset.state) return false;
    var q = (jobs.dataset.q || "").trim().toLowerCase();
    return !q || (row.dataset.text || "").indexOf(q) >= 0;
  }

  function onRows(message) {
    var items = JSON.parse(message.data);
    var body = document.getElementById("rows");
    items.forEach(function (item) {
      var old = document.getElementById("job-" + item.id);
      if (!item.html) {
        if (old) old.classList.add("gone");
        return;
      }
      var row = rowFrom(item.html);
      if (!row) return;
      if (old) {
        old.replaceWith(row);
      } else if (body && wanted(row)) {
        body.insertBefore(row, body.firstElementChild);
        var empty = document.querySelector("#jobs .empty");
        if (empty) empty.remove();
        while (body.children.length > PAGE_ROWS) body.lastElementChild.remove();  // "older" pages them
      } else {
        return;
      }
      htmx.process(row);
    });
  }

  function onOverview(html) {
    var overview = document.getElementById("overview");
    if (!overview) return;
    overview.innerHTML = html;  // rendered by the server, every job string escaped
    htmx.process(overview);
  }

  function handle(message) {
    switch (message.type) {
      case "open":
        stopSlowRefresh();
        setLive("up", "live");
        break;
      case "error":
        startSlowRefresh("live updates lost: refreshing every " + SLOW_REFRESH_MS / 1000 + " s");
        break;
      case "unwatched":
        startSlowRefresh("the queue cannot be watched: refreshing every " + SLOW_REFRESH_MS / 1000 + " s");
        break;
      case "rows":
        onRows(message);
        break;
      case "overview":
        onOverview(message.data);
        break;
      case "resync":
        refreshAll();
        break;
    }
  }

  // One stream for all tabs (a SharedWorker), else one for this tab.
  function subscribe() {
    if (window.SharedWorker) {
      var worker = new SharedWorker("/static/live-worker.js", { name: "execsvc-live" });
      worker.port.onmessage = function (event) { handle(event.data); };
      worker.port.start();
      window.addEventListener("pagehide", function () { worker.port.postMessage("close"); });
      return;
    }
    var source = new EventSource("/events");
    ["ready", "unwatched", "rows", "overview", "resync"].forEach(function (type) {
      source.addEventListener(type, function (event) { handle({ type: type, data: event.data }); });
    });
    source.onopen = function () { handle({ type: "open" }); };
    source.onerror = function () { handle({ type: "error" }); };
  }

  // A job's stdout and stderr over one stream (event id: both byte offsets, so a reconnect resumes).
  function follow(section) {
    var state = document.getElementById("output-state");
    var source = new EventSource(section.dataset.src);
    function say(text) { if (state) state.textContent = text; }
    say("following…");
    ["stdout", "stderr"].forEach(function (stream) {
      var pre = document.getElementById(stream);
      source.addEventListener(stream, function (event) {
        var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
        pre.appendChild(document.createTextNode(JSON.parse(event.data).text));
        if (atEnd) pre.scrollTop = pre.scrollHeight;
      });
    });
    source.addEventListener("end", function () { source.close(); say("complete"); section.dataset.complete = "yes"; });
    source.addEventListener("problem", function (event) { say(JSON.parse(event.data).text); });
    source.onerror = function () {
      say(source.readyState === EventSource.CLOSED ? "disconnected: reload the page" : "reconnecting…");
    };
  }

  function kindChanged() {
    var form = document.getElementById("submit-form");
    if (!form) return;
    var script = form.querySelector("input[name=kind][value=script]").checked;
    form.classList.toggle("kind-script", script);
    form.classList.toggle("kind-command", !script);
  }

  document.addEventListener("DOMContentLoaded", function () {
    subscribe();
    var output = document.getElementById("output");
    if (output) follow(output);
    var form = document.getElementById("submit-form");
    if (form) {
      form.addEventListener("change", kindChanged);
      kindChanged();
    }
  });
})();
