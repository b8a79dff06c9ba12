"""The demo's browser page (`/ui`): sign in at the OpenID provider, run a query, a mutation and a
subscription through ig-gate, step up when asked (RFC 9470), and show a person why a request was refused.

The page itself is public (`/ui` is excluded from the gate); every API call it makes is decided:
- sign-in: authorization code flow with PKCE (S256) from the browser (a public client: OAuth 2.0 for
  Browser-Based Apps); the access token lives in sessionStorage, the device attestation comes from the
  demo MDM at the provider (`/mdm/attestation`) for the signed-in user;
- a 401 whose challenge says `insufficient_user_authentication` sends the browser to the provider with the
  challenge's `acr_values` and `max_age`; back with the new token, the page retries the action it was doing;
- a 403 shows what was refused, the reason codes and the decision id to quote to support;
- the subscription (graphql-transport-ws; the token travels in the `ig_session` cookie, as browsers cannot
  set headers on a WebSocket) stays open until the gate closes it (4401 / 4403).
The "developer" panel keeps the paste-a-token buttons whose raw answers the older browser tests read.
"""

from __future__ import annotations

import json
from typing import Any

DEMO_OPERATIONS = {
    "query": {"query": "query Me { me { subject tenant risk country decision_id } }"},
    "mutation": {"query": "mutation Update($name: String) { update(name: $name) { ok } }",
                 "variables": {"name": "from the page"}},
}


def render(
    issuer: str | None,
    client_id: str,
    endpoint: str = "/graphql",
    operations: dict[str, dict[str, Any]] | None = None,
) -> str:
    """The page, configured for this provider (`issuer` None: only the developer panel), the GraphQL
    `endpoint` it calls and the query and mutation it runs (default: the demo app's)."""
    config = {"issuer": issuer, "client_id": client_id, "endpoint": endpoint,
              "operations": operations or DEMO_OPERATIONS}
    return PAGE.replace("__CONFIG__", json.dumps(config).replace("</", "<\\/"))


PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>ig-gate demo</title>
<style>
body { font-family: sans-serif; max-width: 52em; margin: 2em auto; line-height: 1.4 }
button { margin-right: .4em }
pre { background: #f4f4f4; padding: .6em; white-space: pre-wrap; overflow-wrap: anywhere }
#status.ok { color: #075 } #status.warn { color: #a60 } #status.bad { color: #b00 }
#refusal { border: 2px solid #b00; padding: .2em 1em; background: #fff4f4 }
#refusal h2 { color: #b00 } code { font-size: 1.05em }
</style></head>
<body>
<h1>ig-gate demo</h1>
<script type="application/json" id="oidc-config">__CONFIG__</script>
<section id="app" hidden>
  <p id="who">Not signed in.</p>
  <p><button id="signin">Sign in</button> <button id="signout">Sign out</button>
     <label>Device <select id="device">
       <option value="managed">managed laptop (MDM: managed)</option>
       <option value="jailbroken">jailbroken phone (MDM: jailbroken)</option>
       <option value="">no device attestation</option>
     </select></label></p>
  <p><button id="run-query">Run query</button> <button id="run-mutation">Run mutation</button>
     <button id="watch">Open subscription</button></p>
  <p id="status"></p>
  <div id="refusal" hidden>
    <h2>Access refused</h2>
    <p>What was refused: <b id="refused-what"></b></p>
    <p>Why (reason codes): <b id="refused-reasons"></b></p>
    <p>Decision id &mdash; quote it to support: <code id="refused-decision"></code></p>
    <p id="refused-message"></p>
  </div>
  <pre id="result" hidden></pre>
  <pre id="subscription" hidden></pre>
</section>
<section id="developer">
  <h2>Developer: paste a token</h2>
  <p><label>Bearer token <input id="token" size="60"></label></p>
  <p><button id="query">query</button> <button id="subscribe">subscribe (WebSocket)</button></p>
  <pre id="out"></pre>
</section>
<script>
const cfg = JSON.parse(document.getElementById("oidc-config").textContent);
const store = window.sessionStorage;
const $ = (id) => document.getElementById(id);
const OPERATIONS = cfg.operations;

function status(text, kind) { $("status").textContent = text; $("status").className = kind || ""; }
function b64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\\+/g, "-").replace(/\\//g, "_")
    .replace(/=+$/, "");
}
const random = () => b64url(crypto.getRandomValues(new Uint8Array(32)));
function claimsOf(token) {
  return JSON.parse(atob(token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
}

let discovery = null;
async function provider() {
  if (!discovery) discovery = await (await fetch(cfg.issuer + "/.well-known/openid-configuration")).json();
  return discovery;
}

async function signIn(extra) {
  const d = await provider();
  const verifier = random(), state = random();
  const challenge = b64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  store.setItem("pkce", JSON.stringify({verifier, state}));
  const params = new URLSearchParams({
    response_type: "code", client_id: cfg.client_id, redirect_uri: location.origin + "/ui",
    scope: "openid profile", state, nonce: random(), code_challenge: challenge,
    code_challenge_method: "S256", ...extra,
  });
  location.assign(d.authorization_endpoint + "?" + params);
}

async function finishSignIn(params) {
  const pkce = JSON.parse(store.getItem("pkce") || "{}");
  store.removeItem("pkce");
  history.replaceState(null, "", location.pathname);
  if (params.get("error")) return status("Sign-in failed: " + params.get("error"), "bad");
  if (!pkce.state || params.get("state") !== pkce.state) {
    return status("Sign-in failed: state mismatch", "bad");
  }
  const d = await provider();
  const response = await fetch(d.token_endpoint, {
    method: "POST",
    headers: {"Content-Type": "application/x-www-form-urlencoded"},
    body: new URLSearchParams({
      grant_type: "authorization_code", code: params.get("code"), redirect_uri: location.origin + "/ui",
      client_id: cfg.client_id, code_verifier: pkce.verifier,
    }),
  });
  const tokens = await response.json();
  if (!response.ok) return status("Sign-in failed: " + (tokens.error || response.status), "bad");
  store.setItem("token", tokens.access_token);
  await attest();
  return true;
}

async function attest() {
  const posture = $("device").value;
  store.setItem("device", posture);
  store.removeItem("attestation");
  const token = store.getItem("token");
  if (!posture || !token) return;
  const response = await fetch(cfg.issuer + "/mdm/attestation", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + token},
    body: JSON.stringify({posture}),
  });
  if (response.ok) store.setItem("attestation", (await response.json()).attestation);
}

function renderWho() {
  const token = store.getItem("token");
  if (!token) { $("who").textContent = "Not signed in."; return; }
  const c = claimsOf(token);
  const who = $("who");
  who.textContent = `Signed in as ${c.sub} (tenant ${c.tenant}, session risk ${c.risk}; ` +
    `acr ${c.acr}, amr ${(c.amr || []).join("+")}, authenticated ` +
    `${new Date(c.auth_time * 1000).toLocaleTimeString()}; session ${c.sid})`;
  Object.assign(who.dataset, {sub: c.sub, acr: c.acr, sid: c.sid});
}

function parseChallenge(header) {
  const params = {};
  for (const m of header.matchAll(/(\\w+)=(?:"([^"]*)"|([^,\\s]*))/g)) params[m[1]] = m[2] ?? m[3];
  return params;
}

function showRefusal(kind, body) {
  const error = (body.errors || [])[0] || {};
  const message = error.message || body.reason || "";
  const reasons = (error.extensions && error.extensions.reasons) ||
    (message.includes(": ") ? message.split(": ").slice(1).join(": ").split(", ") : [body.reason]);
  $("refused-what").textContent = `the ${kind} (${OPERATIONS[kind].query.split(" {")[0]}) on ${cfg.endpoint}`;
  $("refused-reasons").textContent = reasons.join(", ");
  $("refused-decision").textContent = (error.extensions && error.extensions.decision_id) || body.decision_id;
  $("refused-message").textContent = message;
  $("refusal").hidden = false;
  status(`Refused (403): ${kind}`, "bad");
}

async function run(kind) {
  $("refusal").hidden = true;
  $("result").hidden = true;
  status(`Running ${kind}...`, "");
  const headers = {"Content-Type": "application/json"};
  const token = store.getItem("token"), attestation = store.getItem("attestation");
  if (token) headers["Authorization"] = "Bearer " + token;
  if (attestation) headers["X-Device-Attestation"] = attestation;
  const payload = JSON.stringify(OPERATIONS[kind]);
  const response = await fetch(cfg.endpoint, {method: "POST", headers, body: payload});
  const body = await response.json().catch(() => ({}));
  if (response.status === 401) {
    const challenge = parseChallenge(response.headers.get("WWW-Authenticate") || "");
    if (challenge.error === "insufficient_user_authentication") {
      store.setItem("pending", kind);
      status(`Step-up required for the ${kind}: signing in again (acr_values=${challenge.acr_values})`,
             "warn");
      const extra = {};
      if (challenge.acr_values) extra.acr_values = challenge.acr_values;
      if (challenge.max_age) extra.max_age = challenge.max_age;
      return signIn(extra);
    }
    const error = challenge.error || "";
    return status(`Not signed in or session ended (401 ${error}): please sign in again`, "bad");
  }
  if (response.status === 403) return showRefusal(kind, body);
  status(response.ok ? `The ${kind} succeeded` : `The ${kind} failed (${response.status})`,
         response.ok ? "ok" : "bad");
  $("result").textContent = JSON.stringify(body, null, 2);
  $("result").hidden = false;
}

function watch() {
  const out = $("subscription");
  out.hidden = false;
  out.textContent = "subscription: connecting";
  delete out.dataset.closed;
  document.cookie = "ig_session=" + store.getItem("token") + "; path=/graphql; SameSite=Strict";
  const ws = new WebSocket(`ws://${location.host}/graphql/ws?watch=1`, "graphql-transport-ws");
  ws.onopen = () => ws.send(JSON.stringify({type: "connection_init"}));
  ws.onmessage = (event) => {
    const message = JSON.parse(event.data);
    if (message.type === "connection_ack") {
      ws.send(JSON.stringify({id: "1", type: "subscribe",
                              payload: {query: "subscription Me { me { subject risk } }"}}));
    } else if (message.type === "next") {
      out.textContent = "subscription open: " + JSON.stringify(message.payload.data);
      out.dataset.open = "1";
    } else {
      out.textContent += "\\n" + event.data;
    }
  };
  ws.onclose = (event) => {
    out.textContent += `\\nsubscription closed by the server: ${event.code}` +
      ({4401: " (session ended or step-up required)", 4403: " (refused)"}[event.code] || "");
    out.dataset.closed = String(event.code);
  };
}

async function start() {
  if (!cfg.issuer) return;
  $("app").hidden = false;
  $("device").value = store.getItem("device") ?? "managed";
  $("signin").onclick = () => signIn({});
  $("signout").onclick = () => { store.clear(); renderWho(); status("Signed out", ""); };
  $("device").onchange = async () => {
    await attest();
    status(`Device: ${$("device").value || "none"}`, "");
  };
  $("run-query").onclick = () => run("query");
  $("run-mutation").onclick = () => run("mutation");
  $("watch").onclick = watch;
  const params = new URLSearchParams(location.search);
  if (params.has("code") || params.has("error")) {
    if (await finishSignIn(params) !== true) return;
    renderWho();
    const pending = store.getItem("pending");
    store.removeItem("pending");
    if (pending) return run(pending);
    return status("Signed in", "ok");
  }
  renderWho();
}

// the developer panel: raw answers, no step-up handling
const show = (text) => { $("out").textContent = text; };
$("query").onclick = async () => {
  const response = await fetch("/graphql", {
    method: "POST",
    headers: {"Content-Type": "application/json", "Authorization": "Bearer " + $("token").value},
    body: JSON.stringify({query: "query Me { me { subject tenant risk } }"}),
  });
  const challenge = response.headers.get("WWW-Authenticate") || "";
  show(response.status + " " + challenge + "\\n" + await response.text());
};
$("subscribe").onclick = () => {
  document.cookie = "ig_session=" + $("token").value + "; path=/; SameSite=Strict";
  const ws = new WebSocket(`ws://${location.host}/graphql/ws`, "graphql-transport-ws");
  const messages = [];
  ws.onmessage = (event) => messages.push(event.data);
  ws.onclose = (event) => show("closed " + event.code + "\\n" + messages.join("\\n"));
};
start().then(() => { document.body.dataset.ready = "1"; });
</script>
</body></html>
"""
