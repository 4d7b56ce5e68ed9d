// Job form: collect the fields (empty = the server's default) and POST them to /v1/jobs.
"use strict";
(function () {
  const form = document.getElementById("job-form");
  const error = document.getElementById("job-error");

  function value(el) {
    const kind = el.dataset.kind;
    if (kind === "bool") return el.checked;
    const raw = el.value.trim();
    if (raw === "") return undefined;
    if (kind === "int" || kind === "float") return Number(raw);
    if (kind === "shape") return raw.split(/[,x\u00d7 ]+/).filter(Boolean).map(Number);
    return raw;
  }

  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    error.hidden = true;
    const config = {};
    form.querySelectorAll("[data-field]").forEach((el) => {
      const v = value(el);
      if (v !== undefined) config[el.dataset.field] = v;
    });
    const body = { model_id: form.dataset.modelId, config: config };
    const hook = document.getElementById("f-webhook").value.trim();
    if (hook) body.webhook_url = hook;
    const button = document.getElementById("start-job");
    button.disabled = true;
    try {
      const job = await zd.api("POST", "/v1/jobs", body);
      window.location.assign("/jobs/" + encodeURIComponent(job.id));
    } catch (err) {
      zd.show(error, "The job was not started: " + err.message);
      button.disabled = false;
    }
  });
})();
