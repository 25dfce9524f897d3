/* Small enhancements of the sync log pages; every page works without them. */
(function () {
  "use strict";
  // Raw bodies are loaded only when someone opens them (they can be large).
  document.querySelectorAll("details.raw[data-body-url]").forEach(function (details) {
    details.addEventListener("toggle", function () {
      if (!details.open || details.dataset.loaded) { return; }
      details.dataset.loaded = "1";
      var pre = details.querySelector("pre");
      fetch(details.dataset.bodyUrl, {credentials: "same-origin"})
        .then(function (r) { if (!r.ok) { throw new Error(r.status); } return r.text(); })
        .then(function (text) { pre.textContent = text; })
        .catch(function (e) { pre.textContent = "Could not load the body (" + e.message + ")."; });
    });
  });
})();
