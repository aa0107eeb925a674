// The consent page may answer the sign-in form's POST (one round trip fewer than a redirect).
// Give that history entry the page's own address, so that reloading the page, or coming back
// to it, asks for it again instead of sending the password form a second time.
"use strict";
(function () {
  var script = document.currentScript;
  var url = script && script.getAttribute("data-url");
  if (url && window.history && typeof window.history.replaceState === "function") {
    window.history.replaceState(null, "", url);
  }
})();
