// The browser test's page (tests/clients/test_js_browser.py): the real SDK and runtime, loaded
// from this page's own origin, talking to a real `closedloop serve` on another origin (CORS).
// The page adds one thing of its own: a fetch that can tamper with or truncate the next bundle
// downloads, to show the SDK refuses them and keeps deciding with its last good bundle.
import { createClient } from "./src/sdk/index.js";

let tamper = null; // null | "signature" | "truncate"

function hex(buf) {
  return Array.from(new Uint8Array(buf), (b) => b.toString(16).padStart(2, "0")).join("");
}

async function pageFetch(url, init) {
  const isBundle = String(url).includes("/v1/bundles/current");
  if (tamper && isBundle && init?.headers) {
    const h = new Headers(init.headers);
    h.delete("If-None-Match"); // a full download to tamper with, not a 304
    init = { ...init, headers: h };
  }
  const res = await fetch(url, init);
  if (!tamper || !isBundle || res.status !== 200) return res;
  const text = await res.text();
  const headers = new Headers(res.headers);
  let body;
  if (tamper === "truncate") {
    body = text.slice(0, Math.floor(text.length / 2)); // the ETag still names the whole download
  } else {
    const env = JSON.parse(text);
    env.payload = env.payload.replace(/"action"/, '"Action"'); // an edit after signing
    if (!env.payload.includes('"Action"')) env.payload += " ";
    body = JSON.stringify(env);
    headers.set("ETag", `"${hex(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(body)))}"`);
  }
  return new Response(body, { status: 200, headers });
}

window.closedloopPage = {
  async start(config) {
    if (config.clearStorage) localStorage.clear();
    const client = createClient({
      baseUrl: config.base, token: config.token, unit: config.unit, publicKeys: [config.key],
      storage: localStorage, fetch: pageFetch, checkEveryMs: 0, flushEveryMs: 0,
    });
    window.closedloopClient = client;
    await client.ready();
    document.getElementById("state").textContent = `running ${client.status().bundleId}`;
    return client.status();
  },
  decide(context) {
    return window.closedloopClient.decide(context);
  },
  async check(mode) {
    tamper = mode;
    try {
      await window.closedloopClient.checkNow();
    } finally {
      tamper = null;
    }
    return window.closedloopClient.status();
  },
  async flush() {
    const ok = await window.closedloopClient.flush();
    return { ok, status: window.closedloopClient.status() };
  },
};
document.getElementById("state").textContent = "ready";
