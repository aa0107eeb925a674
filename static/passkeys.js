// ma-idp passkey ceremonies. Small on purpose, no build step. Works with the JSON the server
// sends (webauthn-rs options, binary fields in base64url) and answers in the same form.
(function () {
  "use strict";
  const enc = (buf) => btoa(String.fromCharCode(...new Uint8Array(buf)))
    .replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  const dec = (s) => {
    const b = atob(s.replace(/-/g, "+").replace(/_/g, "/") + "===".slice((s.length + 3) % 4));
    return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
  };
  const showError = (msg) => {
    const el = document.getElementById("passkey-error");
    if (el) { el.textContent = msg; el.hidden = false; }
  };
  async function post(url, csrf, body) {
    const r = await fetch(url, {
      method: "POST",
      credentials: "same-origin",
      headers: { "content-type": "application/json", "x-csrf-token": csrf },
      body: JSON.stringify(body || {}),
    });
    const j = await r.json().catch(() => ({}));
    if (!r.ok) throw new Error(j.error_description || "Something went wrong. Please try again.");
    return j;
  }
  function requestOptions(o) {
    const pk = o.publicKey;
    pk.challenge = dec(pk.challenge);
    (pk.allowCredentials || []).forEach((c) => { c.id = dec(c.id); });
    return pk;
  }
  function creationOptions(o) {
    const pk = o.publicKey;
    pk.challenge = dec(pk.challenge);
    pk.user.id = dec(pk.user.id);
    (pk.excludeCredentials || []).forEach((c) => { c.id = dec(c.id); });
    return pk;
  }
  const assertionJSON = (c) => ({
    id: c.id, rawId: enc(c.rawId), type: c.type,
    response: {
      authenticatorData: enc(c.response.authenticatorData),
      clientDataJSON: enc(c.response.clientDataJSON),
      signature: enc(c.response.signature),
      userHandle: c.response.userHandle ? enc(c.response.userHandle) : null,
    },
    extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
  });
  const attestationJSON = (c) => ({
    id: c.id, rawId: enc(c.rawId), type: c.type,
    response: {
      attestationObject: enc(c.response.attestationObject),
      clientDataJSON: enc(c.response.clientDataJSON),
      transports: c.response.getTransports ? c.response.getTransports() : undefined,
    },
    extensions: c.getClientExtensionResults ? c.getClientExtensionResults() : {},
  });
  const friendly = (e) => e && e.name === "NotAllowedError"
    ? "The passkey request was cancelled or timed out. Try again."
    : (e && e.message) || "Something went wrong. Please try again.";

  // Sign-in page.
  const login = document.getElementById("passkey-login");
  if (login && window.PublicKeyCredential) {
    login.hidden = false;
    const d = login.dataset;
    let pending = null;
    const run = async (conditional) => {
      const username = conditional ? "" : (document.getElementById("username") || {}).value || "";
      const start = await post(d.start, d.csrf, { username: username || null });
      const req = { publicKey: requestOptions(start.options) };
      if (conditional) {
        pending = new AbortController();
        req.mediation = "conditional";
        req.signal = pending.signal;
      }
      const cred = await navigator.credentials.get(req);
      const done = await post(d.finish, d.csrf, {
        ceremony: start.ceremony, credential: assertionJSON(cred), rid: d.rid || null, via: d.via,
      });
      window.location.assign(done.redirect);
    };
    document.getElementById("passkey-button").addEventListener("click", () => {
      if (pending) { pending.abort(); pending = null; }
      run(false).catch((e) => showError(friendly(e)));
    });
    if (PublicKeyCredential.isConditionalMediationAvailable) {
      PublicKeyCredential.isConditionalMediationAvailable().then((ok) => {
        if (ok) run(true).catch((e) => { if (e.name !== "AbortError") showError(friendly(e)); });
      });
    }
  }

  // Account page and enrollment link: create a passkey.
  for (const [boxId, buttonId] of [["passkey-add", "passkey-add-button"], ["passkey-enroll", "passkey-enroll-button"]]) {
    const box = document.getElementById(boxId);
    if (!box) continue;
    if (!window.PublicKeyCredential) {
      showError("This browser cannot create passkeys.");
      continue;
    }
    box.hidden = false;
    const d = box.dataset;
    document.getElementById(buttonId).addEventListener("click", async () => {
      try {
        const start = await post(d.start, d.csrf, {});
        const cred = await navigator.credentials.create({ publicKey: creationOptions(start.options) });
        const name = (document.getElementById("passkey-name") || {}).value || null;
        const done = await post(d.finish, d.csrf, { ceremony: start.ceremony, credential: attestationJSON(cred), name });
        window.location.assign(done.redirect);
      } catch (e) {
        showError(friendly(e));
      }
    });
  }
})();
