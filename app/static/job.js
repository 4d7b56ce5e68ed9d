// Job page: live progress over Server-Sent Events, cancel, then downloads and the rendered report; delete.
"use strict";
(function () {
  const root = document.getElementById("job");
  const jobId = root.dataset.jobId;
  const base = "/v1/jobs/" + encodeURIComponent(jobId);
  const $ = (id) => document.getElementById(id);
  const TERMINAL = ["succeeded", "failed", "canceled"];

  function formatEta(s) {
    if (s == null) return "estimating";
    if (s < 90) return Math.round(s) + " s";
    return Math.round(s / 60) + " min";
  }

  function render(job) {
    const status = $("job-status");
    status.textContent = job.status;
    status.className = "status s-" + job.status;
    root.dataset.status = job.status;
    const p = job.progress || {};
    $("job-bar").style.width = (p.percent || 0) + "%";
    $("job-percent").textContent = Math.round(p.percent || 0) + "%";
    $("job-stage").textContent = p.stage || (job.status === "queued" ? "waiting for a worker" : "starting");
    $("job-step").textContent = p.total ? p.done + " of " + p.total : "";
    $("job-detail").textContent = p.detail || "";
    $("job-eta").textContent = formatEta(p.eta_seconds);
    if (job.cancel_requested && !TERMINAL.includes(job.status)) $("cancel-job").textContent = "Cancelling\u2026";
    if (TERMINAL.includes(job.status)) finish(job);
  }

  let finished = false;
  async function finish(job) {
    if (finished) return;
    finished = true;
    $("live").hidden = true;
    $("delete-job").hidden = false;
    if (job.status !== "succeeded") {
      $("failure-title").textContent = job.status === "canceled" ? "This job was canceled" : "This job failed";
      $("job-error").textContent = job.error || (job.status === "canceled" ? "Canceled before it finished." : "No reason was recorded.");
      $("failure").hidden = false;
      return;
    }
    try {
      const artifacts = await zd.api("GET", base + "/artifacts");
      $("artifact-list").replaceChildren(...artifacts.data.map((a) => {
        const li = document.createElement("li");
        const link = document.createElement("a");
        link.href = base + "/artifacts/" + encodeURIComponent(a.name);
        link.setAttribute("download", a.name);
        link.className = "button";
        link.dataset.artifact = a.name;
        link.textContent = "Download " + a.name;
        const size = document.createElement("span");
        size.className = "muted";
        size.textContent = " " + zd.formatBytes(a.size_bytes);
        li.append(link, size);
        return li;
      }));
      $("downloads").hidden = false;
      const response = await fetch("/jobs/" + encodeURIComponent(jobId) + "/report", { credentials: "same-origin" });
      if (response.ok) {
        // Server-rendered by the same renderer as report.html, every value escaped there; no scripts inside.
        $("report").innerHTML = await response.text();
      } else {
        $("report").textContent = "The report is not available.";
      }
    } catch (err) {
      $("report").textContent = "Could not load the results: " + err.message;
    }
  }

  $("cancel-job").addEventListener("click", async () => {
    $("cancel-job").disabled = true;
    try {
      render(await zd.api("POST", base + "/cancel"));
    } catch (err) {
      $("cancel-job").disabled = false;
      alert("Could not cancel: " + err.message);
    }
  });

  async function erase(path, what) {
    if (!window.confirm("Delete " + what + "? This cannot be undone.")) return;
    try {
      await zd.api("DELETE", path);
      window.location.assign("/jobs");
    } catch (err) {
      zd.show($("erase-error"), "Could not delete: " + err.message);
    }
  }
  $("delete-job").addEventListener("click", () => erase(base, "this job and its results"));
  $("delete-model").addEventListener("click", () =>
    erase("/v1/models/" + encodeURIComponent(root.dataset.modelId), "the model and every job run on it"));

  if (TERMINAL.includes(root.dataset.status)) {
    zd.api("GET", base).then(render);
  } else {
    const events = new EventSource(base + "/events", { withCredentials: true });
    events.addEventListener("job", (e) => render(JSON.parse(e.data)));
    events.addEventListener("end", (e) => {
      events.close();
      const data = JSON.parse(e.data);
      if (data && data.id) render(data); else zd.api("GET", base).then(render);
    });
    events.onerror = () => {
      // EventSource retries by itself; stop if the job is over or the session has ended.
      if (finished) { events.close(); return; }
      zd.api("GET", base).catch((err) => {
        events.close();
        $("job-detail").textContent = err.message;
      });
    };
  }
})();
