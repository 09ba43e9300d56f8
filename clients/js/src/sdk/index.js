// closedloop's client SDK: decide in the client with the bundle the service says this unit
// should run, keep it up to date safely, and send the decisions back as telemetry.
//
//   const client = createClient({ baseUrl, token, unit, publicKeys });
//   await client.ready();                   // the last good bundle (storage) and a first check
//   const d = client.decide(context);       // local: no round trip
//   const r = client.rank(request, candidates);   // a ranking system's bundle: a slate, locally
//   client.status();                        // { bundleId, lastError, queue, dropped, … }
//
// Plain ES module, no dependencies: Node ≥ 20 and browsers (fetch, WebCrypto Ed25519).
// See clients/js/src/sdk/README.md.

import { KILLSWITCH_FORMAT, SdkError, openEnvelope, trustedKeys } from "./verify.js";

export { SdkError, openEnvelope, trustedKeys };

const MAX_UNIT = 512;
const DEFAULTS = { checkEveryMs: 60_000, sampleRate: 1, maxQueue: 1000, flushEveryMs: 5000, maxBatch: 100, maxBackoffMs: 60_000 };

/** @param {any} o @param {string} name @param {number} lo @param {number} hi */
function number(o, name, lo, hi) {
  const v = o[name] ?? DEFAULTS[/** @type {keyof typeof DEFAULTS} */ (name)];
  if (typeof v !== "number" || !Number.isFinite(v) || v < lo || v > hi) {
    throw new SdkError(name, `must be a number in [${lo}, ${hi}]. Got ${JSON.stringify(v)} instead.`);
  }
  return v;
}

/** Decision ids as Python's runtime makes them: 12 hex digits of the millisecond time, then a
 * 20-hex-digit (80-bit) counter from a random start — unique and ordered within a client. */
class DecisionIds {
  constructor() {
    this.lastMs = 0;
    this.prefix = "000000000000";
    this.counter = new Uint8Array(10);
    crypto.getRandomValues(this.counter);
    this.counter[0] &= 0x7f; // the lower half: a long run never wraps
  }

  /** @param {number} ms */
  next(ms) {
    if (ms > this.lastMs) {
      this.lastMs = ms;
      this.prefix = Math.floor(ms).toString(16).padStart(12, "0").slice(-12);
    }
    const c = this.counter;
    for (let i = c.length - 1; i >= 0; i--) {
      c[i] = (c[i] + 1) & 0xff;
      if (c[i] !== 0) break;
    }
    let s = this.prefix;
    for (const b of c) s += b.toString(16).padStart(2, "0");
    return s;
  }
}

/** @param {ArrayBuffer} buf */
async function sha256Hex(buf) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", buf));
  let hex = "";
  for (const b of d) hex += b.toString(16).padStart(2, "0");
  return hex;
}

/**
 * @typedef {{ runtime: any, killswitch: any, bundleId: string, system: string, schemaVersion: string,
 *             flight: string | null, etag: string | null, source: string }} Loaded
 */

/** A client of one closedloop service for one unit. Build it with {@link createClient}. */
export class Client {
  /** @param {any} options */
  constructor(options) {
    const o = options ?? {};
    if (typeof o.baseUrl !== "string" || !/^https?:\/\//.test(o.baseUrl)) throw new SdkError("baseUrl", "must be an http(s) URL");
    if (typeof o.token !== "string" || !o.token) throw new SdkError("token", "must be a non-empty string (a token with the client role)");
    if (typeof o.unit !== "string" || !o.unit || o.unit.length > MAX_UNIT) throw new SdkError("unit", `must be a non-empty string of at most ${MAX_UNIT} characters`);
    if (!o.publicKeys || (Array.isArray(o.publicKeys) ? o.publicKeys.length === 0 : typeof o.publicKeys !== "object")) {
      throw new SdkError("publicKeys", "give the base64 Ed25519 public keys bundles may be signed with (closedloop key show)");
    }
    const fetchFn = o.fetch ?? globalThis.fetch;
    if (typeof fetchFn !== "function") throw new SdkError("fetch", "no fetch function: pass one");
    if (o.storage != null && (typeof o.storage.getItem !== "function" || typeof o.storage.setItem !== "function")) {
      throw new SdkError("storage", "must have getItem and setItem (as localStorage has)");
    }
    if (o.loadBundle != null && typeof o.loadBundle !== "function") throw new SdkError("loadBundle", "must be a function");
    this.baseUrl = o.baseUrl.replace(/\/+$/, "");
    this.unit = o.unit;
    this.checkEveryMs = number(o, "checkEveryMs", 0, 2 ** 31 - 1);
    this.sampleRate = number(o, "sampleRate", 0, 1);
    this.maxQueue = Math.floor(number(o, "maxQueue", 0, 10_000_000));
    this.flushEveryMs = number(o, "flushEveryMs", 0, 2 ** 31 - 1);
    this.maxBatch = Math.max(1, Math.floor(number(o, "maxBatch", 1, 10_000)));
    this.maxBackoffMs = number(o, "maxBackoffMs", 0, 2 ** 31 - 1);
    this.expectSystem = o.system ?? null;
    this.expectSchema = o.schemaVersion ?? null;
    this.storageKey = o.storageKey ?? `closedloop:${this.baseUrl}:${this.unit}`;
    this._token = o.token;
    this._fetch = fetchFn;
    this._storage = o.storage ?? null;
    this._loadBundle = o.loadBundle ?? null;
    this._ids = new DecisionIds();
    /** @type {Loaded | null} */
    this._current = null;
    this._queue = /** @type {any[]} */ ([]);
    this._counts = { decisions: 0, sampledOut: 0, dropped: 0, sent: 0, rejected: 0, checks: 0, refused: 0 };
    this._errors = { bundle: /** @type {any} */ (null), telemetry: /** @type {any} */ (null), last: /** @type {any} */ (null) };
    this._failures = 0;
    this._lastCheck = null;
    this._checking = /** @type {Promise<boolean> | null} */ (null);
    this._flushing = /** @type {Promise<boolean> | null} */ (null);
    this._timers = /** @type {any[]} */ ([]);
    this._flushTimer = /** @type {any} */ (null);
    this._closed = false;
    this._keys = trustedKeys(o.publicKeys);
    this._keys.catch(() => {}); // reported by ready()
    this._ready = this._start();
  }

  /** Resolves once the stored bundle (if any) was tried and the first check is done; rejects
   * only for a configuration error (a public key that is not one). */
  ready() {
    return this._ready;
  }

  async _start() {
    await this._keys;
    await this._restore();
    await this.checkNow();
    if (this._closed) return;
    if (this.checkEveryMs > 0) {
      const t = setInterval(() => this.checkNow().catch(() => {}), this.checkEveryMs);
      t.unref?.();
      this._timers.push(t);
    }
    if (this.flushEveryMs > 0) this._scheduleFlush(this.flushEveryMs);
  }

  // -- deciding -----------------------------------------------------------------------------
  /**
   * Decide for `context` locally with the bundle in use (throws SdkError "bundle" while none is;
   * the runtime's ContextError for an invalid context). The decision carries its `decisionId`,
   * `bundleId` and `flight`; it is queued for telemetry when sampled.
   * @param {Record<string, any>} context
   */
  decide(context) {
    const cur = this._current;
    if (!cur) {
      const why = this._errors.bundle ? ` (${this._errors.bundle.message})` : "";
      throw new SdkError("bundle", `no bundle is loaded yet${why}: await client.ready()`);
    }
    const ms = Date.now();
    const decisionId = this._ids.next(ms);
    const d = cur.killswitch ? this._defaultDecision(cur, context, decisionId, ms)
      : cur.runtime.decide(context, { decisionId, unit: this.unit, timestampMs: ms });
    const out = { ...d, decisionId, unit: this.unit, system: cur.system, bundleId: cur.bundleId, flight: cur.flight,
      killswitch: Boolean(cur.killswitch) || Boolean(d.killswitch) };
    this._counts.decisions++;
    this._record(out, context, ms);
    return out;
  }

  /**
   * Rank `candidates` for `request` locally with a ranking system's bundle (the runtime's `rank`:
   * slate, slot propensities, candidate scores, why; `candidates` omitted: `request.candidates`).
   * Throws SdkError "bundle" while none is loaded or when the bundle decides instead of ranking;
   * the runtime's ContextError for an invalid request or candidate. Queued for telemetry when sampled.
   * @param {Record<string, any>} request @param {any[]} [candidates]
   */
  rank(request, candidates) {
    const cur = this._current;
    if (!cur) {
      const why = this._errors.bundle ? ` (${this._errors.bundle.message})` : "";
      throw new SdkError("bundle", `no bundle is loaded yet${why}: await client.ready()`);
    }
    const ms = Date.now();
    const decisionId = this._ids.next(ms);
    const opts = { decisionId, unit: this.unit, timestampMs: ms };
    let d;
    if (cur.killswitch) d = this._defaultRanking(cur, request, candidates, opts);
    else if (typeof cur.runtime?.rank !== "function") throw new SdkError("bundle", "the bundle in use decides actions, it does not rank: call decide(context)");
    else d = cur.runtime.rank(request, candidates, opts);
    const out = { ...d, decisionId, unit: this.unit, system: cur.system, bundleId: cur.bundleId, flight: cur.flight,
      killswitch: Boolean(cur.killswitch) || Boolean(d.killswitch) };
    this._counts.decisions++;
    const cands = candidates === undefined ? request.candidates : candidates;
    this._enqueue({
      decision_id: decisionId, bundle_id: out.bundleId, system: out.system, unit: this.unit,
      context: candidates === undefined ? request : { ...request, candidates: cands }, slate: out.slate,
      slot_propensities: out.slotPropensities, timestamp: new Date(ms).toISOString(), flight: out.flight ?? null,
      killswitch: out.killswitch, sample_prob: this.sampleRate, why: out.why,
      ...(out.candidateScores?.length && out.candidateScores.every(Number.isFinite) ? { candidate_scores: out.candidateScores } : {}),
    });
    return out;
  }

  /** The kill switch's ranking: the first k candidates in input order, propensity 1 each (validated by
   * the ranking runtime loaded before, else read by the kill switch document's candidate id field). */
  _defaultRanking(/** @type {Loaded} */ cur, /** @type {any} */ request, /** @type {any} */ candidates, /** @type {any} */ opts) {
    const ks = cur.killswitch;
    if (cur.runtime && typeof cur.runtime.rankDefault === "function") return cur.runtime.rankDefault(request, candidates, opts);
    const r = ks.ranking;
    const cands = candidates === undefined ? request?.candidates : candidates;
    if (!r || !Array.isArray(cands)) throw new SdkError("bundle", "the kill switch is on and no ranking bundle was loaded: pass the candidates of a ranking system");
    const ids = cands.map((/** @type {any} */ c) => String(c?.[r.candidate_id]));
    const m = Math.min(r.k, ids.length);
    const why = String(r.why).replaceAll("{m}", String(m)).replaceAll("{n}", String(ids.length));
    return { decisionId: opts.decisionId, candidates: ids, candidateScores: [], slate: ids.slice(0, m),
      slotPropensities: new Array(m).fill(1), propensity: 1, why, mode: "organize", killswitch: true };
  }

  /** The kill switch's decision: the system's default action, propensity 1 (the context still
   * validated when a bundle was loaded before). */
  _defaultDecision(/** @type {Loaded} */ cur, /** @type {any} */ context, /** @type {string} */ decisionId, /** @type {number} */ ms) {
    const ks = cur.killswitch;
    const rt = cur.runtime;
    if (rt && typeof rt.decideDefault === "function") {
      const d = rt.decideDefault(context, { decisionId, unit: this.unit, timestampMs: ms });
      if (d.action === ks.default_action) return d;
    } else if (rt && typeof rt.validate === "function") {
      rt.validate(context);
    } else if (!context || typeof context !== "object" || (ks.unit && String(context[ks.unit]) !== this.unit)) {
      throw new SdkError(ks.unit ?? "<context>", `the context must be an object whose unit field is ${JSON.stringify(this.unit)}`);
    }
    return { decisionId, action: ks.default_action, propensity: 1, score: null, scores: {}, why: ks.why, guardrail: null, killswitch: true };
  }

  _record(/** @type {any} */ d, /** @type {any} */ context, /** @type {number} */ ms) {
    if (this.sampleRate < 1 && !(Math.random() < this.sampleRate)) {
      this._counts.sampledOut++;
      return;
    }
    if (this.maxQueue === 0) {
      this._counts.dropped++;
      return;
    }
    /** @type {Record<string, any>} */
    const item = {
      decision_id: d.decisionId, bundle_id: d.bundleId, system: d.system, unit: this.unit, context,
      action: d.action, propensity: d.propensity, timestamp: new Date(ms).toISOString(), flight: d.flight ?? null,
      killswitch: d.killswitch, sample_prob: this.sampleRate,
    };
    if (typeof d.why === "string" && d.why) item.why = d.why;
    if (typeof d.guardrail === "string" && d.guardrail) item.guardrail = d.guardrail;
    const scores = d.scores && typeof d.scores === "object" ? Object.entries(d.scores) : [];
    if (scores.length && scores.every(([, v]) => Number.isFinite(v))) item.scores = d.scores;
    else if (Number.isFinite(d.score)) item.score = d.score;
    this._enqueue(item, true);
  }

  /** Queue one telemetry item (sampled at sampleRate unless `sampled`; the oldest dropped when the queue is full). */
  _enqueue(/** @type {Record<string, any>} */ item, sampled = false) {
    if (!sampled) {
      if (this.sampleRate < 1 && !(Math.random() < this.sampleRate)) {
        this._counts.sampledOut++;
        return;
      }
      if (this.maxQueue === 0) {
        this._counts.dropped++;
        return;
      }
    }
    if (this._queue.length >= this.maxQueue) {
      this._queue.shift(); // the oldest goes: the queue is bounded while offline
      this._counts.dropped++;
    }
    this._queue.push(item);
    if (this._queue.length >= this.maxBatch && this._failures === 0 && this.flushEveryMs > 0) this._scheduleFlush(0);
  }

  // -- the bundle -----------------------------------------------------------------------------
  /** Check for the unit's current bundle now (ETag: an unchanged one costs a 304). Resolves true
   * when the bundle in use is current, false when the check failed (the last good one kept;
   * `status().lastError` says why). */
  checkNow() {
    if (!this._checking) this._checking = this._check().finally(() => { this._checking = null; });
    return this._checking;
  }

  async _check() {
    this._counts.checks++;
    const cur = this._current;
    /** @type {Record<string, string>} */
    const headers = { Authorization: `Bearer ${this._token}` };
    if (cur?.etag) headers["If-None-Match"] = cur.etag;
    const url = `${this.baseUrl}/v1/bundles/current?unit=${encodeURIComponent(this.unit)}`;
    let res;
    try {
      res = await this._fetch(url, { headers });
    } catch (e) {
      return this._bundleFailed("network", `the bundle check failed: ${e?.message ?? e}`);
    }
    this._lastCheck = Date.now();
    if (res.status === 304 && cur) {
      const flight = res.headers.get("closedloop-flight");
      if (flight !== cur.flight && !cur.killswitch) this._current = { ...cur, flight };
      this._errors.bundle = null;
      return true;
    }
    if (res.status !== 200) {
      let detail = "";
      let field = "http";
      try {
        const p = await res.json();
        detail = `: ${p.detail ?? ""}`;
        field = p.field ?? field;
      } catch { /* not problem details */ }
      return this._bundleFailed(field, `GET /v1/bundles/current answered ${res.status}${detail}`);
    }
    let text;
    try {
      const buf = await res.arrayBuffer();
      const etag = res.headers.get("etag");
      const m = etag && /^"([0-9a-f]{64})"$/.exec(etag);
      if (m && (await sha256Hex(buf)) !== m[1]) throw new Error("its sha256 is not its ETag's (truncated?)");
      text = new TextDecoder("utf-8", { fatal: true }).decode(buf);
    } catch (e) {
      return this._bundleFailed("download", `the download failed: ${e?.message ?? e}`);
    }
    try {
      const loaded = await this._accept(text, res.headers.get("etag"), res.headers.get("closedloop-flight"), "network");
      this._current = loaded; // one swap: a decision uses the old bundle or the new one, never a mix
      this._errors.bundle = null;
      await this._persist(text, loaded);
      return true;
    } catch (e) {
      return this._bundleFailed(e?.field ?? "bundle", e?.message ?? String(e));
    }
  }

  /** The signed document `text` verified, parsed and loaded (throws SdkError naming the check).
   * @returns {Promise<Loaded>} */
  async _accept(/** @type {string} */ text, /** @type {string|null} */ etag, /** @type {string|null} */ flight, /** @type {string} */ source) {
    const payload = await openEnvelope(text, await this._keys); // the signature first, then parsing
    let form;
    try {
      form = JSON.parse(payload);
    } catch (e) {
      throw new SdkError("payload", `the signed payload is not JSON: ${e.message}`);
    }
    if (!form || typeof form !== "object") throw new SdkError("payload", "the signed payload is not a JSON object");
    if (form.format === KILLSWITCH_FORMAT) {
      this._expect(form.system, form.schema_version);
      const prev = this._current?.runtime ?? null;
      return { runtime: prev, killswitch: form, bundleId: form.bundle_id, system: form.system, schemaVersion: form.schema_version,
        flight: null, etag, source };
    }
    const b = form.bundle && typeof form.bundle === "object" ? form.bundle : {};
    this._expect(b.system, b.schema_version);
    const load = this._loadBundle ?? (await import("../runtime/index.js")).loadBundle;
    const expect = { system: this.expectSystem ?? this._current?.system, schemaVersion: this.expectSchema ?? this._current?.schemaVersion };
    let runtime;
    try {
      runtime = load(form, expect.system && expect.schemaVersion ? expect : undefined);
    } catch (e) {
      throw new SdkError(e?.field ?? "bundle", `the bundle cannot be loaded: ${e?.message ?? e}`);
    }
    this._expect(runtime.system, runtime.schemaVersion);
    return { runtime, killswitch: null, bundleId: runtime.bundleId, system: runtime.system, schemaVersion: runtime.schemaVersion,
      flight: flight || null, etag, source };
  }

  /** Refuse a document for another system or schema version than this client runs. */
  _expect(/** @type {any} */ system, /** @type {any} */ schemaVersion) {
    const sys = this.expectSystem ?? this._current?.system;
    if (sys != null && system !== sys) throw new SdkError("system", `the bundle is for system ${JSON.stringify(system)}; this client runs ${JSON.stringify(sys)}`);
    const ver = this.expectSchema ?? this._current?.schemaVersion;
    if (ver != null && schemaVersion !== ver) {
      throw new SdkError("schema_version", `the bundle is for schema version ${JSON.stringify(schemaVersion)}; this client's contexts are version ${JSON.stringify(ver)}`);
    }
  }

  _bundleFailed(/** @type {string} */ field, /** @type {string} */ message) {
    this._counts.refused++;
    this._errors.bundle = this._errors.last = { field, message, at: Date.now(), scope: "bundle" };
    return false;
  }

  async _persist(/** @type {string} */ text, /** @type {Loaded} */ loaded) {
    if (!this._storage) return;
    try {
      await this._storage.setItem(this.storageKey, JSON.stringify({ document: text, etag: loaded.etag, flight: loaded.flight }));
    } catch (e) {
      this._errors.last = { field: "storage", message: `the bundle was not stored: ${e?.message ?? e}`, at: Date.now(), scope: "storage" };
    }
  }

  /** The last good bundle from storage, verified again (storage is not trusted more than the network). */
  async _restore() {
    if (!this._storage) return;
    let raw;
    try {
      raw = await this._storage.getItem(this.storageKey);
      if (raw == null) return;
      const saved = JSON.parse(raw);
      this._current = await this._accept(String(saved.document), saved.etag ?? null, saved.flight ?? null, "storage");
    } catch (e) {
      this._bundleFailed(e?.field ?? "storage", `the stored bundle was refused: ${e?.message ?? e}`);
    }
  }

  // -- telemetry -----------------------------------------------------------------------------
  /** Send the queued decisions now, in batches of `maxBatch`. Resolves true when the queue was
   * emptied, false when a batch could not be sent (kept, retried with backoff). */
  flush() {
    if (!this._flushing) this._flushing = this._flushAll().finally(() => { this._flushing = null; });
    return this._flushing;
  }

  async _flushAll() {
    while (this._queue.length) {
      const batch = this._queue.slice(0, this.maxBatch);
      let res;
      try {
        res = await this._fetch(`${this.baseUrl}/v1/decisions`, {
          method: "POST", body: JSON.stringify(batch),
          headers: { Authorization: `Bearer ${this._token}`, "Content-Type": "application/json" },
        });
      } catch (e) {
        return this._flushFailed("network", `sending decisions failed: ${e?.message ?? e}`);
      }
      if (res.status === 413 && batch.length > 1) {
        this.maxBatch = Math.max(1, Math.floor(batch.length / 2));
        continue;
      }
      let body = null;
      try {
        body = await res.json();
      } catch { /* no JSON body */ }
      if (res.status === 202 || res.status === 422 || res.status === 400) {
        // 202: accepted (durable) but for the refused items; 422/400: every item refused — an
        // invalid decision never becomes valid, so none of them is sent again
        const sent = new Set(batch);
        this._queue = this._queue.filter((x) => !sent.has(x));
        const rejected = res.status === 202 ? body?.rejected ?? [] : body?.errors ?? batch;
        this._counts.sent += res.status === 202 ? body?.accepted ?? batch.length - rejected.length : 0;
        this._counts.rejected += rejected.length;
        this._failures = 0;
        this._errors.telemetry = null;
        if (rejected.length) {
          const p = rejected[0];
          this._errors.telemetry = this._errors.last = { field: p?.field ?? "decisions", scope: "telemetry", at: Date.now(),
            message: `${rejected.length} decision(s) refused by the service: ${p?.detail ?? "invalid"}` };
        }
        continue;
      }
      return this._flushFailed(body?.field ?? "http", `POST /v1/decisions answered ${res.status}: ${body?.detail ?? ""}`);
    }
    return true;
  }

  _flushFailed(/** @type {string} */ field, /** @type {string} */ message) {
    this._failures++;
    this._errors.telemetry = this._errors.last = { field, message, at: Date.now(), scope: "telemetry" };
    if (this.flushEveryMs > 0) {
      const backoff = Math.min(this.maxBackoffMs, 1000 * 2 ** Math.min(this._failures - 1, 20));
      this._scheduleFlush(backoff * (0.5 + Math.random() / 2));
    }
    return false;
  }

  _scheduleFlush(/** @type {number} */ ms) {
    if (this._closed) return;
    if (this._flushTimer) clearTimeout(this._flushTimer);
    this._flushTimer = setTimeout(() => {
      this._flushTimer = null;
      this.flush().then((ok) => { if (ok) this._scheduleFlush(this.flushEveryMs); }, () => {});
    }, ms);
    this._flushTimer.unref?.();
  }

  // -- status and shutdown ---------------------------------------------------------------------
  /** What this client runs and how its pipe is doing. */
  status() {
    const cur = this._current;
    return {
      bundleId: cur?.bundleId ?? null, system: cur?.system ?? null, schemaVersion: cur?.schemaVersion ?? null,
      flight: cur?.flight ?? null, killswitch: Boolean(cur?.killswitch), source: cur?.source ?? null, etag: cur?.etag ?? null,
      lastCheck: this._lastCheck, lastError: this._errors.last, bundleError: this._errors.bundle, telemetryError: this._errors.telemetry,
      queue: this._queue.length, ...this._counts,
    };
  }

  /** Stop the background checks and flushes; a last flush is attempted (its result returned). */
  async close() {
    this._closed = true;
    for (const t of this._timers) clearInterval(t);
    this._timers = [];
    if (this._flushTimer) clearTimeout(this._flushTimer);
    this._flushTimer = null;
    await this._ready.catch(() => {});
    return this._queue.length ? this.flush() : true;
  }
}

/**
 * A client of a closedloop service for one unit: see {@link Client} and the README.
 * @param {{ baseUrl: string, token: string, unit: string, publicKeys: string[] | Record<string, string>,
 *           fetch?: typeof fetch, storage?: { getItem(k: string): any, setItem(k: string, v: string): any },
 *           checkEveryMs?: number, sampleRate?: number, maxQueue?: number, flushEveryMs?: number, maxBatch?: number,
 *           maxBackoffMs?: number, system?: string, schemaVersion?: string, storageKey?: string,
 *           loadBundle?: (form: any, expect?: any) => any }} options
 */
export function createClient(options) {
  return new Client(options);
}
