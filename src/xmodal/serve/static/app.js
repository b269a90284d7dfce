// The xmodal web page: plain JavaScript, no framework, nothing loaded from elsewhere.
"use strict";

const $ = (selector) => document.querySelector(selector);

/** fetch() against this server; JSON errors become Error objects with the server's reason. */
async function api(path, options = {}) {
  const response = await fetch(path, { credentials: "same-origin", ...options });
  if (!response.ok) {
    let reason = response.statusText;
    try {
      const body = await response.json();
      reason = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
    } catch (_) { /* not JSON: keep the status text */ }
    const error = new Error(reason);
    error.status = response.status;
    throw error;
  }
  return response.status === 204 ? null : response.json();
}

function setStatus(text) {
  $("#status").textContent = text;
}

function showLogin(message) {
  $("#login").hidden = false;
  $("#login-error").textContent = message || "";
  $("#api-key").focus();
}

function enableSearch(enabled) {
  for (const element of $("#search").elements) element.disabled = !enabled;
}

async function loadInfo() {
  try {
    const info = await api("/api/info");
    $("#login").hidden = true;
    $("#version").textContent = `xmodal ${info.version}`;
    enableSearch(info.library);
    setStatus(info.library
      ? "Type what you are looking for."
      : "This server has no library: it serves machine learning only (Immich-compatible /predict).");
  } catch (error) {
    if (error.status === 401) {
      setStatus("Sign in to search.");
      showLogin();
    } else {
      setStatus(`The server did not answer: ${error.message}`);
    }
  }
}

$("#login").addEventListener("submit", async (event) => {
  event.preventDefault();
  try {
    await api("/api/session", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ api_key: $("#api-key").value }),
    });
    $("#api-key").value = "";
    await loadInfo();
  } catch (error) {
    showLogin(error.status === 401 ? "That key is not right." : error.message);
  }
});

$("#search").addEventListener("submit", (event) => event.preventDefault());

loadInfo();
