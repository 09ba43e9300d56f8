// Guardrails as closedloop.experience.guardrails.GuardLayer.one applies them: the plain rules
// (allow and block lists, hard limits) innermost first — each maps the action where its
// condition holds — then the frequency caps, counted per unit per window in an in-memory store
// (InMemoryCapStore's rules: a newer window drops the older one's counts). The propensity of the
// final action is the sum of the probabilities of every action the layers turned into it.

import { BundleError } from "./errors.js";
import { compileProgram } from "./expr.js";

/** Counts of shows per (cap, window bucket, unit), as closedloop's InMemoryCapStore. */
export class MemoryCapStore {
  constructor() {
    /** @type {Map<number, {bucket: number, counts: Map<string, number>}>} */
    this.caps = new Map();
  }
  /** @param {number} cap @param {number} bucket @param {string} unit */
  count(cap, bucket, unit) {
    const e = this.caps.get(cap);
    if (e === undefined || e.bucket !== bucket) return 0;
    return e.counts.get(unit) ?? 0;
  }
  /** @param {number} cap @param {number} bucket @param {string} unit */
  add(cap, bucket, unit) {
    let e = this.caps.get(cap);
    if (e === undefined || bucket > e.bucket) {
      e = { bucket, counts: new Map() };
      this.caps.set(cap, e);
    } else if (bucket < e.bucket) {
      return;
    }
    e.counts.set(unit, (e.counts.get(unit) ?? 0) + 1);
  }
  /** Whether the unit is full; counted if it wants the action and is not. */
  admit(/** @type {number} */ cap, /** @type {number} */ bucket, /** @type {string} */ unit, /** @type {boolean} */ want, /** @type {number} */ limit) {
    const full = this.count(cap, bucket, unit) >= limit;
    if (want && !full) this.add(cap, bucket, unit);
    return full;
  }
}

/** The window of a decision time (`ts // per_ns` as Python computes it on nanoseconds): `ts` in
 * nanoseconds (a bigint) or whole milliseconds (a number). @param {bigint | number} ts @param {number} perNs */
function bucketOf(ts, perNs) {
  if (typeof ts === "bigint") {
    const p = BigInt(perNs), q = ts / p; // truncates toward zero; Python floors
    return Number(q * p > ts ? q - 1n : q);
  }
  if (perNs % 1000000 === 0) {
    const perMs = perNs / 1000000;
    const r = ts % perMs;
    return (ts - (r < 0 ? r + perMs : r)) / perMs; // floor division, exact on integers
  }
  return Number((BigInt(ts) * 1000000n) / BigInt(perNs));
}

/**
 * @param {any} spec the client form's `guard` (or null)
 * @param {number} k actions
 * @param {Map<string, {index: number, kind: string}>} fields
 * @param {MemoryCapStore} store where the caps count
 */
export function bindGuard(spec, k, fields, store) {
  if (spec === null || spec === undefined) return null;
  const bad = (/** @type {string} */ why) => new BundleError("guardrails", why);
  if (!Array.isArray(spec.layers) || !Array.isArray(spec.caps) || !Number.isInteger(spec.offset)) throw bad("the guardrails are malformed");
  const okAction = (/** @type {any} */ a) => Number.isInteger(a) && a >= 0 && a < k;
  const maps = spec.layers.map((/** @type {any} */ l) => {
    if (!Array.isArray(l.map) || l.map.length !== k || !l.map.every(okAction)) throw bad(`guardrail ${JSON.stringify(l.name)} has a bad action map`);
    return Int32Array.from(l.map);
  });
  const conds = spec.layers.length
    ? compileProgram(spec.layers.map((/** @type {any} */ l) => ({ name: l.name, expr: l.when })), fields, "guardrails")
    : null;
  const caps = spec.caps.map((/** @type {any} */ c) => {
    if (!okAction(c.action) || !okAction(c.fallback) || !Number.isInteger(c.limit) || c.limit < 0 || !Number.isInteger(c.per_ns) || c.per_ns <= 0) {
      throw bad(`frequency cap ${JSON.stringify(c.name)} is malformed`);
    }
    return c;
  });
  /** @type {Map<number, number>} capped action → cap index */
  const capOf = new Map(caps.map((/** @type {any} */ c, /** @type {number} */ j) => [c.action, j]));
  const nPlain = maps.length;
  return {
    offset: spec.offset,
    store,
    /**
     * (final action, index of the rule that changed it or -1, propensity of the final action).
     * @param {any[]} vals @param {number} chosen @param {number[] | null} probs @param {string} unit
     * @param {bigint | number} tsNs the decision time (see bucketOf)
     * @returns {[number, number, number]}
     */
    one(vals, chosen, probs, unit, tsNs) {
      let targets = probs !== null ? Array.from({ length: k }, (_, i) => i) : null;
      let b = chosen, fired = -1;
      if (conds !== null) {
        const on = conds.run(vals);
        for (let r = 0; r < nPlain; r++) {
          if (on[r] !== 0) {
            const m = maps[r];
            const nb = m[b];
            if (nb !== b) { fired = r; b = nb; }
            if (targets !== null) targets = targets.map((t) => m[t]);
          }
        }
      }
      if (caps.length) {
        /** @type {Map<number, boolean>} */
        const full = new Map();
        for (let j = 0; j < caps.length; j++) {
          const c = caps[j];
          const f = this.store.admit(j, bucketOf(tsNs, c.per_ns), unit, b === c.action, c.limit);
          full.set(c.action, f);
          if (f && b === c.action) { fired = nPlain + j; b = c.fallback; }
        }
        if (targets !== null) targets = targets.map((t) => (full.get(t) ? caps[/** @type {number} */ (capOf.get(t))].fallback : t));
      }
      if (probs === null || targets === null) return [b, fired, 1];
      let prop = 0;
      for (let i = 0; i < k; i++) if (targets[i] === b) prop = prop + probs[i];
      return [b, fired, prop];
    },
  };
}
