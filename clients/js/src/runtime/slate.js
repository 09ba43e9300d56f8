// A ranking's slate, drawn slot by slot as closedloop.experience.ranking_kernel draws it for one
// request: slot j's best remaining candidate is the highest score (ties to the lower index; when
// only −inf and NaN remain, the first −inf, else the first NaN); greedy takes it; Softmax draws
// from exp((s − best) / t) over the remaining candidates (NaN and taken ones weigh 0; when the best
// is +inf the +inf ones share the slot, when it is −inf the −inf ones, when NaN all that remain);
// ε-greedy gives ε / r to each of the r remaining and (1 − ε) + ε / r to the best when the best score
// is in the band (else the best, probability 1); SquareCB gives 1 / (r + γ · gap) to each remaining
// one but the best (NaN read as −inf), the best the rest. The draw: the first candidate whose
// cumulative probability (added left to right) exceeds u_j = uniform(decisionId, j), else the last
// one with a probability above 0. Every sum adds left to right, as Python's does, so slates and
// slot probabilities are Python's; only Math.exp (Softmax) may differ from the C library in the last bit.

import { BundleError } from "./errors.js";

/** @param {any} x */
function decode(x) {
  return x === "Infinity" ? Infinity : x === "-Infinity" ? -Infinity : x === "NaN" ? NaN : x;
}

/** The exploration of a ranking's client form, checked. @param {any} spec */
export function slatePolicy(spec) {
  if (spec === null || spec === undefined) return null;
  const bad = (/** @type {string} */ why) => new BundleError("experience", `the ranking's exploration: ${why}`);
  if (spec.kind === "softmax") {
    if (typeof spec.temperature !== "number" || !(spec.temperature > 0)) throw bad("temperature");
    return { kind: "softmax", t: spec.temperature };
  }
  if (spec.kind === "squarecb") {
    if (typeof spec.gamma !== "number" || !(spec.gamma > 0)) throw bad("gamma");
    return { kind: "squarecb", gamma: spec.gamma };
  }
  if (spec.kind === "epsilon") {
    const eps = spec.epsilon, low = decode(spec.low), high = decode(spec.high);
    if (typeof eps !== "number" || !(eps > 0 && eps <= 1) || typeof low !== "number" || typeof high !== "number") throw bad("epsilon");
    return { kind: "epsilon", eps, low, high };
  }
  throw bad(`unknown policy ${JSON.stringify(spec.kind)}`);
}

/** The first index whose cumulative probability exceeds u, else the last with a probability above 0.
 * @param {Float64Array} P @param {number} n @param {number} u */
function pick(P, n, u) {
  let c = 0;
  for (let i = 0; i < n; i++) {
    c = c + P[i];
    if (c > u) return i;
  }
  for (let i = n - 1; i >= 0; i--) if (P[i] > 0) return i;
  return n - 1; // unreachable: a slot's probabilities sum to about 1
}

/**
 * Draw min(k, n) slots from the scores `s` (input order).
 * @param {number[]} s @param {number} k @param {any} policy (slatePolicy's, or null: greedy) @param {number[]} u one uniform number per slot
 * @returns {{picks: number[], slots: number[], propensity: number, explored: number[]}}
 */
export function drawSlate(s, k, policy, u) {
  const n = s.length;
  const m = k < n ? k : n;
  const free = new Uint8Array(n).fill(1);
  const W = new Float64Array(n);
  const P = new Float64Array(n);
  let top = NaN;
  /** @type {number[]} */ const picks = [];
  /** @type {number[]} */ const slots = [];
  /** @type {number[]} */ const explored = [];
  let p = 1;
  for (let j = 0; j < m; j++) {
    let best = -1, kb = -Infinity;
    for (let i = 0; i < n; i++) if (free[i] && s[i] > kb) { best = i; kb = s[i]; }
    if (best < 0) { // nothing above −inf remains: the first −inf one, else the first NaN one
      for (let i = 0; i < n && best < 0; i++) if (free[i] && s[i] === -Infinity) best = i;
      for (let i = 0; i < n && best < 0; i++) if (free[i]) best = i;
    }
    const sb = s[best], r = n - j;
    let pos = best, q = 1;
    if (policy !== null) {
      let draws = true;
      if (policy.kind === "softmax") {
        if (Number.isFinite(sb)) {
          if (sb !== top) {
            for (let i = 0; i < n; i++) W[i] = free[i] && s[i] === s[i] ? Math.exp((s[i] - sb) / policy.t) : 0;
            top = sb;
          }
          let total = 0;
          for (let i = 0; i < n; i++) total = total + W[i];
          for (let i = 0; i < n; i++) P[i] = W[i] / total;
        } else { // the softmax's limit: the +inf ones (or the −inf ones) share the slot; only NaN left: all of them
          let count = 0;
          for (let i = 0; i < n; i++) if (free[i] && (sb !== sb || s[i] === sb)) count++;
          for (let i = 0; i < n; i++) P[i] = free[i] && (sb !== sb || s[i] === sb) ? 1 / count : 0;
          top = NaN;
        }
      } else if (policy.kind === "epsilon") {
        draws = sb >= policy.low && sb <= policy.high;
        const share = policy.eps / r;
        for (let i = 0; i < n; i++) P[i] = free[i] ? share : 0;
        P[best] = (1 - policy.eps) + share;
      } else { // squarecb
        const kbest = sb === sb ? sb : -Infinity;
        for (let i = 0; i < n; i++) {
          if (!free[i]) { P[i] = 0; continue; }
          const key = s[i] === s[i] ? s[i] : -Infinity;
          P[i] = 1 / (r + policy.gamma * (key === kbest ? 0 : kbest - key));
        }
        P[best] = 0;
        let total = 0;
        for (let i = 0; i < n; i++) total = total + P[i];
        P[best] = 1 - total;
      }
      if (draws) {
        pos = pick(P, n, u[j]);
        q = P[pos];
      }
      p = p * q;
      if (pos !== best) explored.push(j);
    }
    picks.push(pos);
    slots.push(q);
    free[pos] = 0;
    W[pos] = 0;
  }
  return { picks, slots, propensity: p, explored };
}
