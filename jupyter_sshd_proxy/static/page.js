// The sshd-proxy page: fills in the command for this server, and shows and
// edits the authorized keys through the REST API under sshd-proxy/api/.
// Everything from the server goes into the page as text (textContent), never
// as HTML. No polling: an open tab must not keep an idle server alive.
"use strict";

(() => {
  const main = document.getElementById("sshd-proxy");
  const baseUrl = main.dataset.baseUrl;
  const api = `${baseUrl}sshd-proxy/api/`;
  const byId = (id) => document.getElementById(id);

  // A token in the address bar (?token=...) would stay in the history and in
  // screenshots: drop it, as JupyterLab does.
  const here = new URL(location.href);
  if (here.searchParams.has("token")) {
    here.searchParams.delete("token");
    history.replaceState(history.state, "", here.pathname + here.search + here.hash);
  }

  // The same rule as the client's ssh_files.host_name(), so that --name is
  // what config-ssh would pick: hub.example.org/user/alice/ -> hub.example.org-alice,
  // and a named server hub.example.org/user/alice/gpu/ -> hub.example.org-alice-gpu.
  function hostName(urlBase) {
    const start = urlBase.indexOf("://");
    const rest = (start >= 0 ? urlBase.slice(start + 3) : urlBase).replace(/\/+$/, "");
    const slash = rest.indexOf("/");
    const host = slash >= 0 ? rest.slice(0, slash) : rest;
    const path = slash >= 0 ? rest.slice(slash + 1) : "";
    const user = /(?:^|\/)user\/([^/]+)(?:\/([^/]+))?/.exec(path);
    const parts = user ? user.slice(1).filter(Boolean) : [];
    const name = host.replaceAll(":", "-") + parts.map((part) => `-${part}`).join("");
    const cleaned = name.replace(/[^A-Za-z0-9._-]/g, "-");
    // config-ssh wants a letter or digit first (an IPv6 host starts with "[").
    return cleaned.replace(/^[^A-Za-z0-9]+/, "") || "jupyter";
  }

  // One word for a POSIX shell.
  function shellWord(text) {
    return /^[A-Za-z0-9_./:@%+=,-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
  }

  const publicUrl = location.origin + baseUrl;
  const name = hostName(publicUrl);
  // (Wrapped in the URL rather than inside "--name NAME".)
  byId("command").replaceChildren(
    `jupyter-sshd-proxy config-ssh ${shellWord(publicUrl)} `,
    make("span", "nowrap", `--name ${shellWord(name)}`),
  );
  for (const element of document.querySelectorAll(".host-name")) {
    element.textContent = name;
  }

  // The token the server put in the page, from the _xsrf cookie it saw. Not
  // read from document.cookie: a page on another port of the same host can
  // add a second _xsrf cookie there (cookies ignore ports).
  function xsrfToken() {
    return main.dataset.xsrfToken;
  }

  class APIError extends Error {}

  // fetch an endpoint; the JSON answer, or an APIError with the API's own words.
  async function call(method, path, body) {
    const headers = { "X-XSRFToken": xsrfToken() };
    const init = { method, headers, credentials: "same-origin", cache: "no-store" };
    if (body !== undefined) {
      headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(api + path, init);
    } catch (error) {
      throw new APIError(`the server cannot be reached (${error.message})`);
    }
    const text = await response.text();
    let data = null;
    try {
      data = text ? JSON.parse(text) : null;
    } catch {
      data = null;
    }
    if (!response.ok) {
      const message = data && typeof data.message === "string" && data.message;
      throw new APIError(message || `${response.status} ${response.statusText}`.trim());
    }
    return data;
  }

  function show(element, text) {
    element.textContent = text || "";
    element.hidden = !text;
  }

  function make(tag, className, text) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (text !== undefined) element.textContent = text;
    return element;
  }

  // ---- copy buttons
  const copyStatus = byId("copy-status");
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const source = byId(button.dataset.copy);
      try {
        await navigator.clipboard.writeText(source.textContent);
        copyStatus.textContent = "Copied.";
      } catch {
        // No clipboard (a plain-http origin): select it for Ctrl+C.
        getSelection().selectAllChildren(source);
        copyStatus.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
      }
    });
  }

  // ---- authorized keys
  const keysList = byId("keys");
  const keysFile = byId("keys-file");
  const keysMessage = byId("keys-message");
  const keysError = byId("keys-error");
  const form = byId("add-key");
  const textarea = byId("new-key");

  // What the server stored, with control and direction characters shown as
  // \\uXXXX: a comment must not reverse or hide the text next to it.
  function visible(text) {
    return text.replace(
      /[\u0000-\u001f\u007f-\u009f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]/g,
      (char) => `\\u${char.charCodeAt(0).toString(16).padStart(4, "0").toUpperCase()}`,
    );
  }

  function describe(key) {
    return key.comment ? `${visible(key.comment)} (${key.fingerprint})` : key.fingerprint;
  }

  function keyItem(key, inSeveralFiles) {
    const item = make("li");
    item.dataset.fingerprint = key.fingerprint;
    const text = make("div", "key");
    text.append(make("span", "comment", visible(key.comment) || "(no comment)"), " ");
    text.append(make("span", "type", key.type), " ");
    text.append(make("code", "fingerprint", key.fingerprint));
    if (key.options) text.append(" ", make("span", "options", `options: ${visible(key.options)}`));
    if (inSeveralFiles) text.append(" ", make("span", "file", `in ${key.file}`));
    const remove = make("button", "remove", "Remove");
    remove.type = "button";
    remove.setAttribute("aria-label", `Remove the key ${describe(key)}`);
    remove.addEventListener("click", () => removeKey(key, remove));
    item.append(text, remove);
    return item;
  }

  async function loadKeys() {
    try {
      const data = await call("GET", "authorized-keys");
      // sshd reads every configured file; new keys go into the first.
      const files = data.files || [data.file];
      const several = files.length > 1;
      keysFile.textContent = data.keys.length
        ? `These keys may log in, from ${files.join(" and ")}:`
        : `No key in ${files.join(" or ")} yet. Add your public key below.`;
      keysList.replaceChildren(...data.keys.map((key) => keyItem(key, several)));
    } catch (error) {
      keysFile.textContent = "The authorized keys could not be read:";
      keysList.replaceChildren();
      show(keysError, error.message);
    }
  }

  async function removeKey(key, button) {
    button.disabled = true;
    show(keysError, "");
    keysMessage.textContent = "";
    try {
      await call("DELETE", `authorized-keys?fingerprint=${encodeURIComponent(key.fingerprint)}`);
      keysMessage.textContent = `Removed the key ${describe(key)}.`;
    } catch (error) {
      show(keysError, error.message);
      button.disabled = false;
    }
    await loadKeys();
  }

  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const submit = form.querySelector("button[type=submit]");
    submit.disabled = true;
    show(keysError, "");
    keysMessage.textContent = "";
    try {
      const key = await call("POST", "authorized-keys", { key: textarea.value.trim() });
      textarea.value = "";
      keysMessage.textContent = `Added the key ${describe(key)}.`;
      await loadKeys();
    } catch (error) {
      show(keysError, error.message);
      textarea.focus();
    } finally {
      submit.disabled = false;
    }
  });

  // ---- host keys
  const SSH_NAMES = { "ssh-ed25519": "ED25519", "ssh-rsa": "RSA" };

  async function loadHostKeys() {
    const list = byId("host-keys");
    try {
      const data = await call("GET", "host-keys");
      list.replaceChildren(
        ...data.keys.map((key) => {
          const item = make("li");
          const label = SSH_NAMES[key.type] || (key.type.startsWith("ecdsa") ? "ECDSA" : key.type);
          item.append(make("span", "type", label), " ", make("code", "fingerprint", key.fingerprint));
          return item;
        }),
      );
      show(byId("host-keys-error"), "");
    } catch (error) {
      list.replaceChildren();
      show(byId("host-keys-error"), error.message);
    }
  }

  // ---- sshd status
  async function loadStatus() {
    const problem = byId("status-problem");
    try {
      const data = await call("GET", "status");
      let state;
      if (data.off) {
        state = `off: ${data.off}`;
      } else if (data.running) {
        state = `running (pid ${data.pid})`;
        if (data.restarts) state += `, restarted ${data.restarts} times`;
      } else if (data.socket) {
        state = "not running: it starts again with the next ssh connection";
      } else {
        state = "not started yet: it starts with the first ssh connection";
      }
      byId("status-state").textContent = state;
      byId("status-version").textContent = data.version || "known once sshd has started";
      const sessions = data.sessions ?? (data.running ? "unknown" : 0);
      byId("status-sessions").textContent = `${sessions}`;
      byId("status-user").textContent = data.user;
      const lastError = byId("status-error");
      lastError.textContent = data.last_error || "none";
      lastError.classList.toggle("problem", Boolean(data.last_error));
      show(problem, "");
    } catch (error) {
      byId("status-state").textContent = "unknown";
      show(problem, error.message);
    }
  }

  byId("refresh").addEventListener("click", () => {
    loadStatus();
    loadHostKeys();
    loadKeys();
  });

  Promise.all([loadKeys(), loadHostKeys(), loadStatus()]).then(() => {
    main.dataset.loaded = "true";
  });
})();
