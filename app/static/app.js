// Shared helpers: the CSRF token (double-submit cookie) and JSON calls to the /v1 API.
"use strict";
window.zd = (function () {
  function csrfToken() {
    const match = document.cookie.split("; ").find((c) => c.startsWith("zd_csrf="));
    return match ? decodeURIComponent(match.slice("zd_csrf=".length)) : "";
  }
  function describeError(status, body) {
    let detail = body && body.detail;
    if (Array.isArray(detail)) {
      detail = detail.map((e) => ((e.loc || []).slice(-1)[0] || "") + ": " + e.msg).join("; ");
    }
    if (status === 401) return "Your session has ended; please sign in again.";
    return detail ? String(detail) : "The server answered HTTP " + status + ".";
  }
  async function api(method, path, body) {
    const options = { method: method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (method !== "GET") options.headers["X-CSRF-Token"] = csrfToken();
    if (body !== undefined) {
      options.headers["Content-Type"] = "application/json";
      options.body = JSON.stringify(body);
    }
    const response = await fetch(path, options);
    let data = null;
    try { data = await response.json(); } catch (e) { data = null; }
    if (!response.ok) throw new Error(describeError(response.status, data));
    return data;
  }
  function formatBytes(n) {
    if (n >= 1e9) return (n / 1e9).toFixed(2) + " GB";
    if (n >= 1e6) return (n / 1e6).toFixed(2) + " MB";
    if (n >= 1e3) return (n / 1e3).toFixed(1) + " kB";
    return n + " B";
  }
  function show(el, text) { el.textContent = text; el.hidden = false; }
  return { csrfToken, api, describeError, formatBytes, show };
})();
