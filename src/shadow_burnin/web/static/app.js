// shadow-burnin dashboard: refresh the page's <main> when the log changes (no reload).
// Served as a file ('self' in the Content-Security-Policy); the page has no inline script.
// New content comes from our own server, already escaped there; it is parsed with
// DOMParser (scripts in parsed documents never run) and swapped in whole.
(function () {
  "use strict";
  var POLL_MS = 1000;
  var busy = false;

  function main() { return document.getElementById("main"); }

  function editing() {
    var a = document.activeElement;
    return a && (a.tagName === "INPUT" || a.tagName === "SELECT" || a.tagName === "TEXTAREA");
  }

  function stamp(text, stale) {
    var live = document.getElementById("live");
    var up = document.getElementById("updated");
    if (up) { up.textContent = text; }
    if (live) { live.classList.toggle("stale", !!stale); }
  }

  function refresh() {
    return fetch(window.location.href, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.text(); })
      .then(function (html) {
        var doc = new DOMParser().parseFromString(html, "text/html");
        var fresh = doc.getElementById("main");
        var old = main();
        if (fresh && old) {
          old.replaceWith(document.importNode(fresh, true));
          document.dispatchEvent(new CustomEvent("sb:updated"));
        }
        stamp("updated " + new Date().toISOString().slice(0, 19) + "Z", false);
      });
  }

  function tick() {
    if (busy || editing()) { return; }
    busy = true;
    fetch("/api/version", { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.json() : null; })
      .then(function (v) {
        var m = main();
        if (v && m && v.version !== m.getAttribute("data-version")) { return refresh(); }
        stamp(null === v ? "not signed in" : "live", null === v);
        return null;
      })
      .catch(function () { stamp("server unreachable", true); })
      .then(function () { busy = false; });
  }

  window.setInterval(tick, POLL_MS);
})();
