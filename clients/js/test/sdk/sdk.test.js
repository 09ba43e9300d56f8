// The SDK against a real `closedloop serve` (started by tests/clients/test_js_sdk.py, which
// passes its address, tokens, key, units and bundles in the environment): local decisions with
// the unit's bundle, ETag/304, refusals (tampered, truncated, another system or schema version,
// an untrusted key) with the last good bundle kept, storage, telemetry (batched, bounded
// offline queue, sampling) and the kill switch.

import assert from "node:assert/strict";
import { appendFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { test } from "node:test";

import { createClient, SdkError } from "../../src/sdk/index.js";
import { loadBundle } from "../../src/runtime/index.js";

const env = process.env;
const need = (name) => {
  const v = env[name];
  if (!v) throw new Error(`${name} is not set: run these tests through tests/clients/test_js_sdk.py`);
  return v;
};
const BASE = need("CLOSEDLOOP_URL");
const TOKEN = need("CLOSEDLOOP_CLIENT_TOKEN");
const KEY = need("CLOSEDLOOP_PUBLIC_KEY");
const PROD = { unit: need("CLOSEDLOOP_UNIT_PROD"), bundle: need("CLOSEDLOOP_BUNDLE_PROD") };
const FLIGHT = { unit: need("CLOSEDLOOP_UNIT_FLIGHT"), bundle: need("CLOSEDLOOP_BUNDLE_FLIGHT") };

const ctx = (unit, i = 0) => ({ user_id: unit, url: `http://login-${i}.example/verify`, domain: `login-${i}.example`,
  domain_age_days: 5 + (i % 20), has_password_field: true, num_forms: 1 });

/** Record the decision ids a test made the service acknowledge (the pytest test finds them in telemetry). */
const sentIds = (ids) => appendFileSync(need("CLOSEDLOOP_SDK_OUT"), ids.map((x) => `${x}\n`).join(""));

/** A fetch that can be told to change the next bundle download (a man in the middle, a bad proxy),
 * to fail (offline), and that records the statuses it saw. */
function wrappedFetch() {
  const w = { statuses: [], next: null, offline: false, offlinePosts: false };
  w.fetch = async (url, init) => {
    if (w.offline || (w.offlinePosts && init?.method === "POST")) throw new TypeError("fetch failed (offline)");
    if (w.next) init = { ...init, headers: Object.fromEntries(Object.entries(init?.headers ?? {}).filter(([k]) => k !== "If-None-Match")) };
    const res = await fetch(url, init);
    w.statuses.push(res.status);
    if (w.next && res.status === 200 && String(url).includes("/v1/bundles/current")) {
      const change = w.next;
      w.next = null;
      const { body, headers } = change(await res.text(), new Headers(res.headers));
      return new Response(body, { status: 200, headers });
    }
    return res;
  };
  return w;
}

const client = (extra = {}) => createClient({ baseUrl: BASE, token: TOKEN, unit: PROD.unit, publicKeys: [KEY], loadBundle,
  checkEveryMs: 0, flushEveryMs: 0, ...extra });

test("each unit decides locally with its arm's bundle: production, or its flight's candidate", async () => {
  for (const [arm, flight] of [[PROD, null], [FLIGHT, "b"]]) {
    const c = client({ unit: arm.unit });
    await c.ready();
    const s = c.status();
    assert.equal(s.bundleId, arm.bundle);
    assert.equal(s.flight, flight);
    assert.equal(s.system, "phishing");
    assert.equal(s.lastError, null);
    const ds = [0, 1, 2].map((i) => c.decide(ctx(arm.unit, i)));
    for (const d of ds) {
      assert.match(d.decisionId, /^[0-9a-f]{32}$/);
      assert.equal(d.bundleId, arm.bundle);
      assert.equal(d.flight, flight);
      assert.ok(["allow", "warn", "block"].includes(d.action), d.action);
      assert.ok(d.propensity > 0 && d.propensity <= 1);
    }
    assert.equal(new Set(ds.map((d) => d.decisionId)).size, 3);
    assert.throws(() => c.decide(ctx("someone-else")), (e) => e.field === "user_id");
    assert.equal(c.status().queue, 3); // the refused context was not queued
    await c.close();
  }
});

test("an unchanged bundle costs a 304; the bundle stays", async () => {
  const w = wrappedFetch();
  const c = client({ fetch: w.fetch });
  await c.ready();
  assert.equal(await c.checkNow(), true);
  assert.equal(await c.checkNow(), true);
  assert.deepEqual(w.statuses, [200, 304, 304]);
  assert.equal(c.status().bundleId, PROD.bundle);
  assert.equal(c.status().checks, 3);
});

test("a tampered bundle is refused by its signature; the last good one keeps deciding", async () => {
  const w = wrappedFetch();
  const c = client({ fetch: w.fetch, unit: FLIGHT.unit });
  await c.ready();
  w.next = (text, headers) => {
    const env = JSON.parse(text);
    env.payload = env.payload.replace(FLIGHT.bundle, PROD.bundle); // claim to be another bundle
    headers.delete("etag"); // an attacker would not leave a checksum that gives the change away
    return { body: JSON.stringify(env), headers };
  };
  assert.equal(await c.checkNow(), false);
  const s = c.status();
  assert.equal(s.bundleError.field, "signature");
  assert.match(s.bundleError.message, /does not match/);
  assert.equal(s.bundleId, FLIGHT.bundle);
  assert.equal(c.decide(ctx(FLIGHT.unit)).bundleId, FLIGHT.bundle);
  // the next check gets the good document again and clears the error
  assert.equal(await c.checkNow(), true);
  assert.equal(c.status().bundleError, null);
});

test("a truncated download is refused (its ETag is its sha256); the last good one is kept", async () => {
  const w = wrappedFetch();
  const c = client({ fetch: w.fetch });
  await c.ready();
  w.next = (text, headers) => {
    headers.set("etag", '"0000000000000000000000000000000000000000000000000000000000000000"');
    return { body: text.slice(0, text.length >> 1), headers };
  };
  assert.equal(await c.checkNow(), false);
  assert.equal(c.status().bundleError.field, "download");
  w.next = (text, headers) => {
    headers.delete("etag");
    return { body: text.slice(0, text.length - 40), headers };
  };
  assert.equal(await c.checkNow(), false);
  assert.equal(c.status().bundleError.field, "download");
  assert.equal(c.status().bundleId, PROD.bundle);
  assert.ok(c.decide(ctx(PROD.unit)).action);
});

test("a bundle for another system or schema version is refused, signed or not", async () => {
  const fixtures = need("CLOSEDLOOP_FIXTURES");
  for (const [file, field] of [["other_system.json", "system"], ["other_schema.json", "schema_version"]]) {
    const w = wrappedFetch();
    const c = client({ fetch: w.fetch });
    await c.ready();
    const doc = await readFile(`${fixtures}/${file}`, "utf8");
    w.next = (_text, headers) => {
      headers.delete("etag");
      return { body: doc, headers };
    };
    assert.equal(await c.checkNow(), false);
    assert.equal(c.status().bundleError.field, field, c.status().bundleError.message);
    assert.equal(c.status().bundleId, PROD.bundle);
  }
});

test("a bundle signed by a key the client was not given is never loaded", async () => {
  const pair = await crypto.subtle.generateKey({ name: "Ed25519" }, true, ["sign", "verify"]);
  const raw = new Uint8Array(await crypto.subtle.exportKey("raw", pair.publicKey));
  const c = client({ publicKeys: [btoa(String.fromCharCode(...raw))] });
  await c.ready();
  assert.equal(c.status().bundleId, null);
  assert.equal(c.status().bundleError.field, "signature");
  assert.match(c.status().bundleError.message, /does not trust/);
  assert.throws(() => c.decide(ctx(PROD.unit)), (e) => e instanceof SdkError && e.field === "bundle");
  const bad = client({ publicKeys: ["not base64!"] });
  await assert.rejects(bad.ready(), (e) => e.field === "publicKeys");
});

test("the last good bundle is stored, verified again when read, and used while offline", async () => {
  const store = new Map();
  const storage = { getItem: (k) => store.get(k) ?? null, setItem: (k, v) => store.set(k, v) };
  const first = client({ storage });
  await first.ready();
  assert.equal(store.size, 1);
  const w = wrappedFetch();
  w.offline = true;
  const second = client({ storage, fetch: w.fetch });
  await second.ready();
  const s = second.status();
  assert.equal(s.bundleId, PROD.bundle);
  assert.equal(s.source, "storage");
  assert.equal(s.bundleError.field, "network");
  assert.ok(second.decide(ctx(PROD.unit)).action);
  // storage is not trusted more than the network
  const [k, v] = [...store.entries()][0];
  const saved = JSON.parse(v);
  const env = JSON.parse(saved.document);
  env.payload = env.payload.replace('"phishing"', '"phishinG"');
  store.set(k, JSON.stringify({ ...saved, document: JSON.stringify(env) }));
  const third = client({ storage, fetch: w.fetch });
  await third.ready();
  assert.equal(third.status().bundleId, null);
  assert.equal(third.status().refused, 2); // the stored document (its signature), then the network
  assert.equal(third.status().lastError.field, "network");
});

test("decisions are batched to POST /v1/decisions and acknowledged", async () => {
  const c = client({ maxBatch: 10 });
  await c.ready();
  const ids = [];
  for (let i = 0; i < 25; i++) ids.push(c.decide(ctx(PROD.unit, i)).decisionId);
  assert.equal(c.status().queue, 25);
  assert.equal(await c.flush(), true);
  const s = c.status();
  assert.equal(s.sent, 25);
  assert.equal(s.rejected, 0);
  assert.equal(s.queue, 0);
  sentIds(ids);
});

test("the offline queue is bounded, counts what it drops, and is sent once back online", async () => {
  const w = wrappedFetch();
  const c = client({ fetch: w.fetch, maxQueue: 10, unit: FLIGHT.unit });
  await c.ready();
  w.offlinePosts = true;
  const ids = [];
  for (let i = 0; i < 15; i++) ids.push(c.decide(ctx(FLIGHT.unit, i)).decisionId);
  assert.equal(c.status().queue, 10);
  assert.equal(c.status().dropped, 5);
  assert.equal(await c.flush(), false);
  assert.equal(c.status().telemetryError.field, "network");
  assert.equal(c.status().queue, 10);
  w.offlinePosts = false;
  assert.equal(await c.flush(), true);
  assert.equal(c.status().sent, 10);
  assert.equal(c.status().telemetryError, null);
  sentIds(ids.slice(5)); // the oldest five were dropped
});

test("decisions are sampled at sampleRate, each carrying it", async () => {
  const c = client({ sampleRate: 0.25, maxQueue: 10_000 });
  await c.ready();
  for (let i = 0; i < 800; i++) c.decide(ctx(PROD.unit, i));
  const s = c.status();
  assert.ok(s.queue > 200 - 5 * 12.25 && s.queue < 200 + 5 * 12.25, String(s.queue)); // ±5σ
  assert.equal(s.queue + s.sampledOut, 800);
  assert.ok(c._queue.every((x) => x.sample_prob === 0.25));
});

test("the kill switch: the system's default action until it is off again", async () => {
  const admin = need("CLOSEDLOOP_ADMIN_TOKEN");
  const set = async (on) => {
    const r = await fetch(`${BASE}/v1/admin/killswitch`, { method: "POST", body: JSON.stringify({ on, reason: "sdk test" }),
      headers: { Authorization: `Bearer ${admin}`, "Content-Type": "application/json" } });
    assert.equal(r.status, 200, await r.text());
  };
  const c = client({ unit: FLIGHT.unit });
  await c.ready();
  await set(true);
  try {
    assert.equal(await c.checkNow(), true);
    const s = c.status();
    assert.equal(s.killswitch, true);
    assert.equal(s.bundleId, PROD.bundle); // the production bundle's version, as the service's decisions name it
    const d = c.decide(ctx(FLIGHT.unit, 3));
    assert.deepEqual([d.action, d.propensity, d.killswitch, d.flight], ["allow", 1, true, null]);
    assert.throws(() => c.decide(ctx("someone-else")), (e) => e.field === "user_id");
    assert.equal(await c.flush(), true);
    assert.equal(c.status().sent, 1);
    sentIds([d.decisionId]);
  } finally {
    await set(false);
  }
  assert.equal(await c.checkNow(), true);
  assert.equal(c.status().killswitch, false);
  assert.equal(c.status().bundleId, FLIGHT.bundle);
});
