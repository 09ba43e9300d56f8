// The experience: scores → greedy action and reason index (Thresholds, BestAction), each action's
// probability when it explores (EpsilonGreedy, Softmax, SquareCB), and the draw from a uniform
// number — closedloop.experience.experiences / exploration, operation for operation (sums left to
// right, the same comparisons), so actions and propensities are Python's.

import { BundleError } from "./errors.js";

/** @param {any} x */
function decodeNumber(x) {
  if (x === "Infinity") return Infinity;
  if (x === "-Infinity") return -Infinity;
  if (x === "NaN") return NaN;
  return x;
}

/** The index drawn by `u` from `probs` (cumulative, left to right). @param {number[]} probs @param {number} u */
export function choose(probs, u) {
  let c = 0, last = 0;
  for (let i = 0; i < probs.length; i++) {
    const p = probs[i];
    if (p > 0) {
      last = i;
      c = c + p;
      if (u < c) return i;
    }
  }
  return last;
}

/** @param {any} spec @param {number} k actions */
function policy(spec, k) {
  const bad = (/** @type {string} */ why) => new BundleError("experience", `exploration: ${why}`);
  if (spec.kind === "epsilon") {
    const eps = spec.epsilon, low = decodeNumber(spec.low), high = decodeNumber(spec.high);
    const mask = spec.mask;
    if (typeof eps !== "number" || !(eps > 0 && eps <= 1) || typeof low !== "number" || typeof high !== "number") throw bad("epsilon");
    if (mask !== null && !(Array.isArray(mask) && mask.length === k && mask.some(Boolean))) throw bad("mask");
    const shown = mask === null ? k : mask.filter(Boolean).length;
    const share = eps / shown;
    return {
      kind: "epsilon",
      /** @param {number} greedy @param {number} score */
      probs(greedy, score) {
        const out = new Array(k).fill(0);
        if (!(low <= score && score <= high)) {
          out[greedy] = 1;
          return out;
        }
        if (mask === null) {
          out.fill(share);
          out[greedy] = (1 - eps) + share;
          return out;
        }
        for (let i = 0; i < k; i++) out[i] = mask[i] ? share : 0;
        out[greedy] += 1 - eps;
        return out;
      },
    };
  }
  if (spec.kind === "softmax") {
    const t = spec.temperature;
    if (typeof t !== "number" || !(t > 0)) throw bad("temperature");
    return {
      kind: "softmax",
      /** @param {number[]} scores */
      probs(scores) {
        let m = -Infinity, any = false;
        for (const s of scores) if (s === s) { if (!any || s > m) m = s; any = true; }
        if (!any) return scores.map(() => 1 / scores.length);
        const e = scores.map((s) => (s === s ? Math.exp((s - m) / t) : 0));
        let total = 0;
        for (const v of e) total = total + v;
        return e.map((v) => v / total);
      },
    };
  }
  if (spec.kind === "squarecb") {
    const g = spec.gamma;
    if (typeof g !== "number" || !(g > 0)) throw bad("gamma");
    return {
      kind: "squarecb",
      /** @param {number[]} scores @param {number} best */
      probs(scores, best) {
        const r = scores.length;
        let sb = scores[best];
        if (sb !== sb) sb = -Infinity;
        const out = [];
        let total = 0;
        for (let i = 0; i < r; i++) {
          if (i === best) { out.push(0); continue; }
          let s = scores[i];
          if (s !== s) s = -Infinity;
          const p = 1 / (r + g * (s === sb ? 0 : sb - s));
          total = total + p;
          out.push(p);
        }
        out[best] = 1 - total;
        return out;
      },
    };
  }
  throw bad(`unknown policy ${JSON.stringify(spec.kind)}`);
}

/**
 * The chooser of the client form's `experience`: one(scores) → [action, why]; probs(scores, greedy).
 * @param {any} spec @param {number} k @param {number} nOutputs
 */
export function bindExperience(spec, k, nOutputs) {
  const bad = (/** @type {string} */ why) => new BundleError("experience", why);
  if (!spec || typeof spec !== "object" || !Number.isInteger(spec.explored)) throw bad("the experience is malformed");
  const explore = spec.explore === null || spec.explore === undefined ? null : policy(spec.explore, k);
  const explored = spec.explored;
  const okAction = (/** @type {any} */ a) => Number.isInteger(a) && a >= 0 && a < k;
  if (spec.kind === "thresholds") {
    const col = spec.column;
    const levels = spec.levels;
    if (!Number.isInteger(col) || col < 0 || col >= nOutputs || !Array.isArray(levels) || levels.length === 0 || !okAction(spec.otherwise)) {
      throw bad("the thresholds are malformed");
    }
    for (const l of levels) if (!Array.isArray(l) || typeof l[0] !== "number" || !okAction(l[1])) throw bad("a threshold level is malformed");
    if (explore !== null && explore.kind !== "epsilon") throw bad("thresholds explore with epsilon-greedy only");
    const otherwise = spec.otherwise, below = levels.length, nan = levels.length + 1, n = levels.length;
    return {
      explores: explore !== null,
      explored,
      /** @param {number[]} scores @returns {[number, number]} */
      one(scores) {
        const v = scores[col];
        for (let j = 0; j < n; j++) if (v >= levels[j][0]) return [levels[j][1], j];
        return v !== v ? [otherwise, nan] : [otherwise, below];
      },
      /** @param {number[]} scores @param {number} greedy */
      probs(scores, greedy) {
        return /** @type {any} */ (explore).probs(greedy, scores[col]);
      },
    };
  }
  if (spec.kind === "best_action") {
    if (nOutputs !== k) throw bad("best_action needs one output per action");
    return {
      explores: explore !== null,
      explored,
      /** @param {number[]} scores @returns {[number, number]} */
      one(scores) {
        let best = 0, top = -Infinity;
        for (let i = 0; i < scores.length; i++) if (scores[i] > top) { best = i; top = scores[i]; }
        return [best, best];
      },
      /** @param {number[]} scores @param {number} greedy */
      probs(scores, greedy) {
        const p = /** @type {any} */ (explore);
        if (p.kind === "softmax") return p.probs(scores);
        if (p.kind === "squarecb") return p.probs(scores, greedy);
        return p.probs(greedy, scores[greedy]);
      },
    };
  }
  throw bad(`the experience ${JSON.stringify(spec.kind)} cannot run in the client runtime`);
}
