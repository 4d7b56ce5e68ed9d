// Upload page: drag-and-drop or picker, XHR upload with a progress bar, then the model summary.
"use strict";
(function () {
  const drop = document.getElementById("dropzone");
  const input = document.getElementById("file-input");
  const progress = document.getElementById("upload-progress");
  const bar = document.getElementById("upload-bar");
  const text = document.getElementById("upload-text");
  const error = document.getElementById("upload-error");

  function showSummary(model) {
    document.getElementById("m-filename").textContent = model.filename;
    document.getElementById("m-format").textContent = model.format;
    document.getElementById("m-params").textContent = model.params == null ? "unknown" : model.params.toLocaleString("en");
    document.getElementById("m-input").textContent = model.input_shape ? model.input_shape.join(" \u00d7 ") : "not declared";
    document.getElementById("m-sha").textContent = model.sha256;
    document.getElementById("m-dedup").hidden = !model.deduplicated;
    document.getElementById("m-layer-count").textContent = String(model.prunable_layers.length);
    const list = document.getElementById("m-layers");
    list.replaceChildren(...model.prunable_layers.map((name) => {
      const li = document.createElement("li"); li.textContent = name; return li;
    }));
    const warnings = document.getElementById("m-warnings");
    warnings.replaceChildren(...(model.warnings || []).map((w) => {
      const li = document.createElement("li"); li.textContent = w; return li;
    }));
    document.getElementById("configure-link").href = "/jobs/new?model_id=" + encodeURIComponent(model.id);
    document.getElementById("model-summary").hidden = false;
  }

  function upload(file) {
    error.hidden = true;
    document.getElementById("model-summary").hidden = true;
    progress.hidden = false;
    bar.style.width = "0%";
    text.textContent = "uploading " + file.name;
    const form = new FormData();
    form.append("file", file, file.name);
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/v1/models");
    xhr.withCredentials = true;
    xhr.setRequestHeader("X-CSRF-Token", zd.csrfToken());
    xhr.setRequestHeader("Accept", "application/json");
    xhr.upload.onprogress = function (e) {
      if (!e.lengthComputable) return;
      const pct = (100 * e.loaded) / e.total;
      bar.style.width = pct.toFixed(1) + "%";
      text.textContent = zd.formatBytes(e.loaded) + " of " + zd.formatBytes(e.total);
    };
    xhr.upload.onload = function () { text.textContent = "checking the file on the server\u2026"; };
    xhr.onload = function () {
      let body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      if (xhr.status === 200 || xhr.status === 201) {
        bar.style.width = "100%";
        text.textContent = "uploaded " + file.name;
        showSummary(body);
      } else {
        progress.hidden = true;
        zd.show(error, "Upload refused: " + zd.describeError(xhr.status, body));
      }
    };
    xhr.onerror = function () { progress.hidden = true; zd.show(error, "The upload failed: the server could not be reached."); };
    xhr.send(form);
  }

  input.addEventListener("change", () => { if (input.files.length) upload(input.files[0]); });
  ["dragenter", "dragover"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.add("over"); }));
  ["dragleave", "drop"].forEach((t) => drop.addEventListener(t, (e) => { e.preventDefault(); drop.classList.remove("over"); }));
  drop.addEventListener("drop", (e) => { if (e.dataTransfer.files.length) upload(e.dataTransfer.files[0]); });
})();
