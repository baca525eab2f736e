// authsvc example SPA, no build step: OAuth 2.1 authorization code + PKCE (RFC 7636) through
// the hosted login page, tokens bound to a DPoP key (RFC 9449), RP-initiated logout.
//
// - The DPoP key is a non-extractable WebCrypto ECDSA P-256 key pair kept in IndexedDB: every tab
//   of this origin signs with the same key, a reload keeps it, and no script (this one included)
//   can read the private key out. The tokens are bound to it: a stolen refresh or access token
//   is useless without it.
// - The tokens live in the same IndexedDB database, shared by the tabs. Refreshes are serialised
//   across tabs with Web Locks: a tab whose access token was refused takes the lock, and if
//   another tab has rotated the tokens meanwhile it takes the new ones instead of presenting a
//   refresh token that was already used. (The server's grace window,
//   AUTHSVC_REFRESH_REUSE_GRACE_SECONDS, forgives a simultaneous retry too.)
// - Logout clears the tokens and the key, tells the other tabs (BroadcastChannel), and sends the
//   browser to the end_session_endpoint, which revokes the session and ends the hosted page's
//   sign-in, then comes back here.
"use strict";

const DB_NAME = "authsvc-spa";
const STORE = "kv";
const PENDING = "authsvc-spa-pending"; // sessionStorage: this tab's authorization request
const LOGOUT = "authsvc-spa-logout"; // sessionStorage: this tab's logout request's state

const channel = "BroadcastChannel" in self ? new BroadcastChannel("authsvc-spa") : null;
// key: the DPoP key pair (cached from IndexedDB); tokens: the current token response.
const state = {
  ready: false, config: null, server: null, key: null, tokens: null, username: null,
  refreshes: 0, adopted: 0, lastMe: null,
};
let inflightRefresh = null;
let dpopNonce = null;

const $ = (id) => document.getElementById(id);
function log(message) {
  $("log").textContent += `${new Date().toISOString().slice(11, 23)} ${message}\n`;
}
function render() {
  const signedIn = state.tokens !== null;
  $("status").textContent = signedIn ? `signed in as ${state.username ?? "…"}` : "signed out";
  $("login").hidden = signedIn;
  $("actions").hidden = !signedIn;
}

// -- encoding ------------------------------------------------------------------------------------
const utf8 = (text) => new TextEncoder().encode(text);
function b64url(bytes) {
  let binary = "";
  for (const byte of new Uint8Array(bytes)) binary += String.fromCharCode(byte);
  return btoa(binary).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}
const randomString = (bytes) => b64url(crypto.getRandomValues(new Uint8Array(bytes)));
const sha256 = async (text) => b64url(await crypto.subtle.digest("SHA-256", utf8(text)));
function jwtPayload(token) {
  const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
  const binary = atob(part + "=".repeat((4 - (part.length % 4)) % 4));
  return JSON.parse(new TextDecoder().decode(Uint8Array.from(binary, (c) => c.charCodeAt(0))));
}

// -- IndexedDB: one key-value store shared by every tab of this origin ----------------------------
let database = null;
function openDatabase() {
  return new Promise((resolve, reject) => {
    const request = indexedDB.open(DB_NAME, 1);
    request.onupgradeneeded = () => request.result.createObjectStore(STORE);
    request.onsuccess = () => resolve(request.result);
    request.onerror = () => reject(request.error);
  });
}
async function kv(mode, operation) {
  database ??= openDatabase();
  const db = await database;
  return new Promise((resolve, reject) => {
    const tx = db.transaction(STORE, mode);
    const request = operation(tx.objectStore(STORE));
    tx.oncomplete = () => resolve(request.result);
    tx.onerror = () => reject(tx.error);
  });
}
const load = (name) => kv("readonly", (store) => store.get(name));
const save = (name, value) => kv("readwrite", (store) => store.put(value, name));
const remove = (name) => kv("readwrite", (store) => store.delete(name));

function withLock(name, task) {
  return navigator.locks ? navigator.locks.request(name, task) : task();
}

// -- DPoP (RFC 9449) -------------------------------------------------------------------------------
async function dpopKey() {
  if (state.key) return state.key;
  // Under a lock, so that two tabs opening at once make one key between them.
  state.key = await withLock("authsvc-spa-key", async () => {
    let key = await load("dpop-key");
    if (!key) {
      // extractable: false: the private key cannot be exported, only used to sign.
      key = await crypto.subtle.generateKey(
        { name: "ECDSA", namedCurve: "P-256" }, false, ["sign", "verify"]);
      await save("dpop-key", key);
    }
    return key;
  });
  return state.key;
}

async function proof(method, url, accessToken) {
  const key = await dpopKey();
  const { kty, crv, x, y } = await crypto.subtle.exportKey("jwk", key.publicKey);
  const header = { typ: "dpop+jwt", alg: "ES256", jwk: { kty, crv, x, y } };
  const claims = { jti: randomString(16), htm: method, htu: url, iat: Math.floor(Date.now() / 1000) };
  if (accessToken) claims.ath = await sha256(accessToken); // section 4.2
  if (dpopNonce) claims.nonce = dpopNonce; // section 8, when the server asks for nonces
  const input = `${b64url(utf8(JSON.stringify(header)))}.${b64url(utf8(JSON.stringify(claims)))}`;
  // WebCrypto's ECDSA signature is r || s, the JWS (ES256) form.
  const signature = await crypto.subtle.sign(
    { name: "ECDSA", hash: "SHA-256" }, key.privateKey, utf8(input));
  return `${input}.${b64url(signature)}`;
}

async function asksForNonce(response) {
  if (response.status === 401) {
    return (response.headers.get("WWW-Authenticate") ?? "").includes("use_dpop_nonce");
  }
  const body = await response.clone().json().catch(() => ({}));
  return body.error === "use_dpop_nonce";
}

// A request with a fresh proof (and the access token under the DPoP scheme, if given); once
// more with the server's nonce if it asks for one.
async function dpopFetch(method, url, { form, accessToken } = {}) {
  for (let attempt = 0; ; attempt += 1) {
    const headers = { DPoP: await proof(method, url, accessToken) };
    if (accessToken) headers.Authorization = `DPoP ${accessToken}`;
    const response = await fetch(url, {
      method,
      headers,
      body: form ? new URLSearchParams(form) : undefined,
      credentials: "omit", // tokens only: no cookie speaks for this page
    });
    const nonce = response.headers.get("DPoP-Nonce");
    if (nonce) dpopNonce = nonce;
    if (attempt === 0 && nonce && (response.status === 400 || response.status === 401)
        && await asksForNonce(response)) continue;
    return response;
  }
}

// -- sign-in: authorization code + PKCE ------------------------------------------------------------
const redirectUri = () => state.config.redirect_uri ?? `${location.origin}${location.pathname}`;

async function login() {
  const pending = { verifier: randomString(32), state: randomString(16), nonce: randomString(16) };
  sessionStorage.setItem(PENDING, JSON.stringify(pending));
  const url = new URL(state.server.authorization_endpoint);
  url.search = new URLSearchParams({
    response_type: "code",
    client_id: state.config.client_id,
    redirect_uri: redirectUri(),
    scope: state.config.scope ?? "openid profile",
    state: pending.state,
    nonce: pending.nonce,
    code_challenge: await sha256(pending.verifier),
    code_challenge_method: "S256",
  });
  location.assign(url.href);
}

// The hosted page sent the browser back with ?code&state&iss (or ?error&state&iss).
async function completeLogin(params) {
  const pending = JSON.parse(sessionStorage.getItem(PENDING) ?? "null");
  sessionStorage.removeItem(PENDING);
  if (!pending || params.get("state") !== pending.state) {
    log("ignored a callback this tab did not ask for");
    return;
  }
  if (params.get("iss") !== state.server.issuer) { // RFC 9207: the answer is from our server
    log("ignored a callback from another issuer");
    return;
  }
  if (params.has("error")) {
    log(`sign-in failed: ${params.get("error")}`);
    return;
  }
  const response = await dpopFetch("POST", state.server.token_endpoint, {
    form: {
      grant_type: "authorization_code",
      code: params.get("code"),
      redirect_uri: redirectUri(),
      client_id: state.config.client_id,
      code_verifier: pending.verifier,
    },
  });
  const body = await response.json();
  if (!response.ok) {
    log(`code exchange failed: ${body.error}`);
    return;
  }
  // The ID token came straight from the token endpoint over TLS (OpenID Connect Core 3.1.3.7):
  // check that it is for us and for this request.
  const claims = jwtPayload(body.id_token);
  const audiences = [].concat(claims.aud);
  if (claims.iss !== state.server.issuer || !audiences.includes(state.config.client_id)
      || claims.nonce !== pending.nonce) {
    log("refused an ID token that is not for this sign-in");
    return;
  }
  await keepTokens(body);
  log(`signed in (${body.token_type})`);
  channel?.postMessage({ type: "login" });
}

async function keepTokens(tokens, previous = null) {
  // A refresh answer may leave out the ID token; logout still needs one to name the session.
  state.tokens = { ...tokens, id_token: tokens.id_token ?? previous?.id_token };
  await save("tokens", state.tokens);
}

// -- refresh: one tab at a time --------------------------------------------------------------------
// `refused` is the access token the API just refused.
function refresh(refused) {
  inflightRefresh ??= withLock("authsvc-spa-refresh", async () => {
    const stored = await load("tokens");
    if (!stored) {
      state.tokens = null;
      return false;
    }
    if (stored.access_token !== refused) {
      state.tokens = stored; // another tab refreshed while this one waited
      state.adopted += 1;
      log("took the tokens another tab refreshed");
      return true;
    }
    const response = await dpopFetch("POST", state.server.token_endpoint, {
      form: {
        grant_type: "refresh_token",
        refresh_token: stored.refresh_token,
        client_id: state.config.client_id,
      },
    });
    const body = await response.json().catch(() => ({}));
    if (!response.ok) {
      log(`refresh failed: ${response.status} ${body.error ?? ""}`);
      if (response.status === 400 || response.status === 401) {
        await remove("tokens"); // the session is over
        state.tokens = null;
      }
      return false;
    }
    await keepTokens(body, stored);
    state.refreshes += 1;
    log("refreshed");
    return true;
  }).finally(() => { inflightRefresh = null; });
  return inflightRefresh;
}

// -- the API ---------------------------------------------------------------------------------------
// GET with the access token and a proof; on 401 refresh (or adopt another tab's tokens), retry.
async function api(path) {
  const url = `${state.server.issuer}${path}`;
  const call = async () => {
    const token = state.tokens?.access_token;
    const response = token
      ? await dpopFetch("GET", url, { accessToken: token })
      : new Response(null, { status: 401 });
    return { response, token };
  };
  let { response, token } = await call();
  if (response.status === 401 && token && await refresh(token)) ({ response } = await call());
  if (response.status === 401) signedOut();
  return response;
}

async function me() {
  const response = await api("/auth/me");
  const body = response.ok ? await response.json() : null;
  state.lastMe = { status: response.status, username: body?.username ?? null };
  if (body) state.username = body.username;
  log(`/auth/me: ${response.status}`);
  render();
  return state.lastMe;
}

// Fire /auth/me at a given wall-clock time (used to make several tabs call at once).
function meAt(when) {
  state.lastMe = null;
  setTimeout(me, Math.max(0, when - Date.now()));
}

// -- logout ----------------------------------------------------------------------------------------
async function logout() {
  const tokens = state.tokens ?? await load("tokens");
  await forget();
  channel?.postMessage({ type: "logout" });
  render();
  if (!tokens?.id_token) return;
  // RP-initiated logout: the server revokes the session the ID token names and ends the hosted
  // page's sign-in, then sends the browser back here with our state.
  const logoutState = randomString(16);
  sessionStorage.setItem(LOGOUT, logoutState);
  const url = new URL(state.server.end_session_endpoint);
  url.search = new URLSearchParams({
    id_token_hint: tokens.id_token,
    client_id: state.config.client_id,
    post_logout_redirect_uri: redirectUri(),
    state: logoutState,
  });
  location.assign(url.href);
}

async function forget() {
  await remove("tokens");
  await remove("dpop-key"); // the next sign-in gets a new key
  signedOut();
}

function signedOut() {
  state.tokens = null;
  state.username = null;
  state.key = null;
  render();
}

channel?.addEventListener("message", (event) => {
  if (event.data?.type === "logout") {
    log("logged out in another tab");
    signedOut();
  } else if (event.data?.type === "login") {
    log("signed in in another tab");
    state.key = null; // the signed-in tab may have made a new key
    load("tokens").then((tokens) => { state.tokens = tokens ?? null; return me(); });
  }
});
$("login").addEventListener("click", login);
$("me").addEventListener("click", me);
$("logout").addEventListener("click", logout);

async function start() {
  state.config = await (await fetch("config.json", { cache: "no-store" })).json();
  const issuer = state.config.issuer ?? location.origin;
  state.server = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) {
    await completeLogin(params);
  } else if (params.has("state")) {
    const expected = sessionStorage.getItem(LOGOUT);
    sessionStorage.removeItem(LOGOUT);
    log(params.get("state") === expected ? "signed out" : "ignored an unexpected state");
  }
  if (location.search) history.replaceState(null, "", location.pathname); // no code in history
  state.tokens ??= (await load("tokens")) ?? null;
  if (state.tokens) await me(); else render();
  state.ready = true;
}

start().catch((error) => { log(`error: ${error}`); render(); state.ready = true; });

self.authsvcApp = { state, me, meAt, login, logout, refresh, dpopKey };
