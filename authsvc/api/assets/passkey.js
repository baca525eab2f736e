// The "Use a passkey" button of the hosted sign-in's code form. It asks the server for
// WebAuthn request options bound to this form's sign-in (the form's own fields: the CSRF
// token and the mfa_token), lets the browser sign them with a passkey, and posts the assertion
// with the form as `credential`. Without this script the form still takes a code.
(() => {
  "use strict";
  const button = document.getElementById("passkey");
  const status = document.getElementById("passkey-status");
  const form = button && button.form;
  if (!form || !status || !window.PublicKeyCredential || !navigator.credentials) {
    return;
  }
  const verify = form.querySelector('button[type="submit"][value="mfa"]');
  const b64 = (buffer) =>
    btoa(String.fromCharCode(...new Uint8Array(buffer)))
      .replace(/\+/g, "-")
      .replace(/\//g, "_")
      .replace(/=+$/, "");
  const unb64 = (text) =>
    Uint8Array.from(atob(text.replace(/-/g, "+").replace(/_/g, "/")), (c) => c.charCodeAt(0));

  const options = async () => {
    const fields = new URLSearchParams(new FormData(form));
    for (const name of ["code", "recovery_code", "credential"]) {
      fields.delete(name);
    }
    const response = await fetch(button.dataset.options, {
      method: "POST",
      body: fields,
      credentials: "same-origin",
      headers: { Accept: "application/json" },
    });
    if (!response.ok) {
      throw new Error(response.status === 401 ? "expired" : "refused");
    }
    const publicKey = await response.json();
    publicKey.challenge = unb64(publicKey.challenge);
    publicKey.allowCredentials = (publicKey.allowCredentials || []).map((c) => ({
      ...c,
      id: unb64(c.id),
    }));
    return publicKey;
  };

  const answer = (credential) => {
    const r = credential.response;
    return JSON.stringify({
      id: credential.id,
      rawId: b64(credential.rawId),
      type: credential.type,
      response: {
        clientDataJSON: b64(r.clientDataJSON),
        authenticatorData: b64(r.authenticatorData),
        signature: b64(r.signature),
        userHandle: r.userHandle ? b64(r.userHandle) : null,
      },
      clientExtensionResults: {},
    });
  };

  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "";
    try {
      const credential = await navigator.credentials.get({ publicKey: await options() });
      if (!credential) {
        throw new Error("cancelled");
      }
      form.elements.namedItem("code").value = "";
      form.elements.namedItem("recovery_code").value = "";
      form.elements.namedItem("credential").value = answer(credential);
      verify.click();
    } catch (error) {
      status.textContent =
        error instanceof Error && error.message === "expired"
          ? "This sign-in has expired. Sign in again."
          : "The passkey was not used. Try again, or enter a code.";
      button.disabled = false;
    }
  });
  button.hidden = false;
})();
