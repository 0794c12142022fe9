// A SharedWorker: one /events stream for every tab of the dashboard in this browser.
// A browser keeps at most six HTTP/1.1 connections to one host; a stream per tab would use
// them up, and the seventh tab would never load. Each tab's port gets every message as
// {type, data}: "open", "error" (the stream dropped; the browser retries), and the
// server's events ("ready", "unwatched", "rows", "overview", "resync").
"use strict";
var ports = new Set();
var source = null;
var open = false;
var TYPES = ["ready", "unwatched", "rows", "overview", "resync"];

function broadcast(message) {
  ports.forEach(function (port) { port.postMessage(message); });
}

function connect() {
  source = new EventSource("/events");
  TYPES.forEach(function (type) {
    source.addEventListener(type, function (event) { broadcast({ type: type, data: event.data }); });
  });
  source.onopen = function () { open = true; broadcast({ type: "open" }); };
  source.onerror = function () {
    open = false;
    broadcast({ type: "error" });
    if (source.readyState === EventSource.CLOSED) {  // refused (401 after a restart ...): try again later
      source = null;
      setTimeout(function () { if (ports.size && source === null) connect(); }, 5000);
    }
  };
}

self.onconnect = function (event) {
  var port = event.ports[0];
  ports.add(port);
  port.onmessage = function (message) {
    if (message.data === "close") {
      ports.delete(port);
      if (!ports.size && source !== null) { source.close(); source = null; open = false; }
    }
  };
  port.start();
  if (source === null) connect();
  else if (open) port.postMessage({ type: "open" });
};
