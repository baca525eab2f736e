// authsvc browser mode, no build step. The refresh token lives only in the HttpOnly cookie
// __Host-authsvc_rt (this script never sees it); the access token lives in this tab's memory.
// Every call that relies on the cookie sends X-Authsvc-CSRF: 1 (the server also checks Origin).
"use strict";

const CSRF = { "X-Authsvc-CSRF": "1", "X-Authsvc-Token-Transport": "cookie" };
const channel = "BroadcastChannel" in self ? new BroadcastChannel("authsvc") : null;
const state = { accessToken: null, username: null, refreshes: 0, lastMe: null };
let inflightRefresh = null;

const $ = (id) => document.getElementById(id);
function log(message) {
  $("log").textContent += `${new Date().toISOString().slice(11, 23)} ${message}\n`;
}
function render() {
  const signedIn = state.accessToken !== null;
  $("status").textContent = signedIn ? `signed in as ${state.username ?? "…"}` : "signed out";
  $("login-form").hidden = signedIn;
  $("actions").hidden = !signedIn;
}

async function post(path, { body, bearer } = {}) {
  const headers = { ...CSRF };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (bearer) headers["Authorization"] = `Bearer ${bearer}`;
  return fetch(path, {
    method: "POST",
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin",
  });
}

// One refresh at a time across every tab of this origin (Web Locks): each request then carries
// the newest cookie, so no tab presents a refresh token another tab already rotated. Without
// Web Locks the server's grace window still answers simultaneous refreshes with one successor.
function refresh() {
  if (!inflightRefresh) {
    const run = async () => {
      const response = await post("/auth/refresh");
      if (!response.ok) {
        state.accessToken = null;
        log(`refresh failed: ${response.status}`);
        return false;
      }
      state.accessToken = (await response.json()).access_token;
      state.refreshes += 1;
      log("refreshed");
      return true;
    };
    const locked = navigator.locks
      ? navigator.locks.request("authsvc-refresh", run)
      : run();
    inflightRefresh = locked.finally(() => { inflightRefresh = null; });
  }
  return inflightRefresh;
}

// Calls the API with the access token; on 401 refreshes once and retries.
async function api(path) {
  const call = () => fetch(path, {
    headers: state.accessToken ? { Authorization: `Bearer ${state.accessToken}` } : {},
  });
  let response = await call();
  if (response.status === 401 && await refresh()) response = await call();
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

async function login(username, password) {
  const response = await post("/auth/login", { body: { username, password } });
  if (!response.ok) {
    log(`login failed: ${(await response.json()).error}`);
    return false;
  }
  state.accessToken = (await response.json()).access_token;
  log("logged in");
  await me();
  return true;
}

async function logout() {
  await post("/auth/logout", { bearer: state.accessToken });  // clears the cookie
  channel?.postMessage({ type: "logout" });
  signedOut();
}

function signedOut() {
  state.accessToken = null;
  state.username = null;
  render();
}

// Fire /auth/me at a given wall-clock time (used to make several tabs call at once).
function meAt(when) {
  state.lastMe = null;
  setTimeout(me, Math.max(0, when - Date.now()));
}

channel?.addEventListener("message", (event) => {
  if (event.data?.type === "logout") { log("logged out in another tab"); signedOut(); }
});
$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  login($("username").value, $("password").value);
});
$("me").addEventListener("click", me);
$("logout").addEventListener("click", logout);

// A new tab has no access token yet: the cookie (if any) gets one.
refresh().then((ok) => (ok ? me() : render()));

self.authsvcApp = { state, me, meAt, login, logout, refresh };
