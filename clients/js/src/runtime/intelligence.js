// Intelligence: the client form's parameters bound into scoring functions (features x, context
// values v) → one score, each performing the Python scorer's `one` operations in the same order:
// linear sums left to right then the shared sigmoid, rules adding points then clipping, lookup
// tables with ASCII-lower-cased keys, LightGBM trees (LightGBM's NumericalDecision, kZeroThreshold),
// Platt and isotonic calibration, weighted votes, stacking (log-odds through log1p) and partitions.
// Math.exp / Math.log1p are the only library calls (the README states their tolerance).

import { BundleError } from "./errors.js";
import { log1p } from "./expr.js";

/** closedloop.base.numeric.sigmoid @param {number} z */
export function sigmoid(z) {
  if (z >= 0) return 1 / (1 + Math.exp(-z));
  const e = Math.exp(z);
  return e / (1 + e);
}

const LOGIT_EPS = 1e-9;
const LOGIT_HI = 1 - LOGIT_EPS;
/** closedloop.intelligence.stacking.logit @param {number} p */
function logit(p) {
  p = p < LOGIT_EPS ? LOGIT_EPS : p > LOGIT_HI ? LOGIT_HI : p;
  return log1p(p - 1) - log1p(-p);
}

/** @type {Record<string, (a: number, b: number) => boolean>} */
const OPS = {
  ">": (a, b) => a > b, ">=": (a, b) => a >= b, "<": (a, b) => a < b, "<=": (a, b) => a <= b,
  "==": (a, b) => a === b, "!=": (a, b) => a !== b,
};

const OP_CODES = [">", ">=", "<", "<=", "==", "!="];
/** `a OP b` for the operator's index in OP_CODES. @param {number} op @param {number} a @param {number} b */
function holds(op, a, b) {
  switch (op) {
    case 0: return a > b;
    case 1: return a >= b;
    case 2: return a < b;
    case 3: return a <= b;
    case 4: return a === b;
    default: return a !== b;
  }
}

/** @param {string} s */
function asciiLower(s) {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

/** @typedef {(x: number[], v: any[]) => number} Score */

/**
 * @param {any} spec @param {{nFeatures: number, fields: Map<string, {index: number, kind: string}>}} env
 * @param {string} where @param {number} [depth]
 * @returns {Score}
 */
export function bindIntelligence(spec, env, where = "intelligence", depth = 0) {
  const bad = (/** @type {string} */ why) => new BundleError("intelligence", `${where}: ${why}`);
  if (depth > 50) throw bad("nested too deeply");
  if (!spec || typeof spec !== "object") throw bad("not an intelligence");
  const num = (/** @type {any} */ x, /** @type {string} */ name) => {
    if (typeof x !== "number" || !Number.isFinite(x)) throw bad(`'${name}' must be a finite number`);
    return x;
  };
  const feat = (/** @type {any} */ i) => {
    if (!Number.isInteger(i) || i < 0 || i >= env.nFeatures) throw bad(`feature index ${i} is out of range`);
    return i;
  };
  const field = (/** @type {any} */ name) => {
    const f = env.fields.get(name);
    if (f === undefined || f.kind !== "str") throw bad(`'${name}' must be a text context field`);
    return f.index;
  };
  const sub = (/** @type {any} */ s, /** @type {string} */ w) => bindIntelligence(s, env, `${where}.${w}`, depth + 1);
  const list = (/** @type {any} */ a, /** @type {string} */ name) => {
    if (!Array.isArray(a)) throw bad(`'${name}' must be a list`);
    return a;
  };
  switch (spec.kind) {
    case "linear": {
      const idx = list(spec.idx, "idx").map(feat);
      const w = list(spec.w, "w").map((x) => num(x, "w"));
      if (idx.length !== w.length) throw bad("one weight per feature");
      const b = num(spec.b, "b");
      const n = idx.length;
      const lin = (/** @type {number[]} */ x) => {
        let z = b;
        for (let j = 0; j < n; j++) z = z + x[idx[j]] * w[j];
        return z;
      };
      return spec.logistic ? (x) => sigmoid(lin(x)) : lin;
    }
    case "affinity": return affinity(spec, bad, feat, num, list, env);
    case "rules": {
      const raw = list(spec.rules, "rules");
      const n = raw.length;
      const idx = new Int32Array(n), code = new Int32Array(n), value = new Float64Array(n), points = new Float64Array(n);
      raw.forEach((r, j) => {
        if (!Array.isArray(r) || !OP_CODES.includes(r[1])) throw bad("a rule must be [feature, op, value, points]");
        idx[j] = feat(r[0]);
        code[j] = OP_CODES.indexOf(r[1]);
        value[j] = num(r[2], "value");
        points[j] = num(r[3], "points");
      });
      const base = num(spec.base, "base"), lo = num(spec.lo, "lo"), hi = num(spec.hi, "hi");
      return (x) => {
        let s = base;
        for (let j = 0; j < n; j++) if (holds(code[j], x[idx[j]], value[j])) s = s + points[j];
        return s < lo ? lo : s > hi ? hi : s;
      };
    }
    case "threshold_rule": {
      const i = feat(spec.i), op = Object.hasOwn(OPS, spec.op) ? OPS[spec.op] : undefined, t = num(spec.t, "t");
      const then = num(spec.then, "then");
      const otherwise = num(spec.otherwise, "otherwise");
      if (op === undefined) throw bad(`unknown comparison ${spec.op}`);
      return (x) => (op(x[i], t) ? then : otherwise);
    }
    case "lookup": {
      const f = field(spec.field), lower = spec.lower === true;
      const keys = list(spec.keys, "keys"), values = list(spec.values, "values");
      if (keys.length !== values.length) throw bad("one value per key");
      const table = new Map(keys.map((k, j) => [String(k), num(values[j], "values")]));
      const dflt = num(spec.default, "default");
      const fb = spec.fallback === null ? null : sub(spec.fallback, "fallback");
      return (x, v) => {
        const got = table.get(lower ? asciiLower(v[f]) : v[f]);
        if (got !== undefined) return got;
        return fb !== null ? fb(x, v) : dflt;
      };
    }
    case "lightgbm": return forest(spec, bad, feat);
    case "platt": {
      const a = num(spec.a, "a"), b = num(spec.b, "b"), base = sub(spec.base, "base");
      return (x, v) => sigmoid(a * base(x, v) + b);
    }
    case "isotonic": return isotonic(spec, bad, sub(spec.base, "base"), list, num);
    case "vote": {
      const members = list(spec.members, "members").map((m, i) => sub(m, `members[${i}]`));
      const w = list(spec.w, "w").map((x) => num(x, "w"));
      const total = num(spec.total, "total");
      if (w.length !== members.length) throw bad("one weight per member");
      return (x, v) => {
        let acc = 0;
        for (let j = 0; j < members.length; j++) acc = acc + members[j](x, v) * w[j];
        return acc / total;
      };
    }
    case "stacking": {
      const members = list(spec.members, "members").map((m, i) => sub(m, `members[${i}]`));
      const w = list(spec.w, "w").map((x) => num(x, "w"));
      const b = num(spec.b, "b"), logistic = spec.logistic === true, useLogit = spec.logit === true;
      if (w.length !== members.length) throw bad("one weight per member");
      return (x, v) => {
        let z = b;
        for (let j = 0; j < members.length; j++) {
          let s = members[j](x, v);
          if (useLogit) s = logit(s);
          z = z + s * w[j];
        }
        return logistic ? sigmoid(z) : z;
      };
    }
    case "partitioned": {
      const f = field(spec.field);
      const keys = list(spec.keys, "keys"), parts = list(spec.parts, "parts");
      if (keys.length !== parts.length) throw bad("one part per key");
      const byKey = new Map(keys.map((k, j) => [String(k), sub(parts[j], `parts[${JSON.stringify(k)}]`)]));
      const dflt = sub(spec.default, "default");
      return (x, v) => (byKey.get(v[f]) ?? dflt)(x, v);
    }
    default:
      throw bad(`the kind ${JSON.stringify(spec.kind)} cannot run in the client runtime`);
  }
}

/** closedloop.intelligence.affinity.AffinityModel: sigmoid(linear part + the (a, b) pair's offset);
 * a pair the table lacks adds 0, and a key `a` it lacks altogether adds nothing (its batch form). @returns {Score} */
function affinity(/** @type {any} */ spec, /** @type {any} */ bad, /** @type {any} */ feat, /** @type {any} */ num,
  /** @type {any} */ list, /** @type {{fields: Map<string, {index: number, kind: string}>}} */ env) {
  const idx = list(spec.idx, "idx").map(feat);
  const w = list(spec.w, "w").map((/** @type {any} */ x) => num(x, "w"));
  if (idx.length !== w.length) throw bad("one weight per feature");
  const b = num(spec.b, "b");
  const keys = list(spec.keys, "keys");
  const key = (/** @type {any} */ name) => {
    const f = env.fields.get(name);
    if (f === undefined || f.kind !== "str") throw bad(`the key '${name}' must be a text field`);
    return f.index;
  };
  if (keys.length !== 2) throw bad("two keys");
  const ka = key(keys[0]), kb = key(keys[1]);
  const as = list(spec.a, "a"), bs = list(spec.bv, "bv"), codes = list(spec.codes, "codes"), offsets = list(spec.offsets, "offsets");
  if (codes.length !== offsets.length) throw bad("one offset per pair");
  const nb = bs.length, limit = as.length * nb;
  /** @type {Map<string, Map<string, number>>} */
  const table = new Map();
  let last = -1;
  for (let j = 0; j < codes.length; j++) {
    const c = codes[j];
    if (!Number.isInteger(c) || c <= last || c >= limit) throw bad("the pair codes must be increasing integers within the table");
    last = c;
    const a = String(as[Math.floor(c / nb)]);
    let row = table.get(a);
    if (row === undefined) table.set(a, (row = new Map()));
    row.set(String(bs[c % nb]), num(offsets[j], "offsets"));
  }
  const n = idx.length;
  return (x, v) => {
    let z = b;
    for (let j = 0; j < n; j++) z = z + x[idx[j]] * w[j];
    const row = table.get(v[ka]);
    return sigmoid(row === undefined ? z : z + (row.get(v[kb]) ?? 0));
  };
}

/** @returns {Score} */
function isotonic(/** @type {any} */ spec, /** @type {any} */ bad, /** @type {Score} */ base, /** @type {any} */ list, /** @type {any} */ num) {
  const xs = list(spec.x, "x").map((/** @type {any} */ a) => num(a, "x"));
  const ys = list(spec.y, "y").map((/** @type {any} */ a) => num(a, "y"));
  const slope = list(spec.slope, "slope").map((/** @type {any} */ a) => num(a, "slope"));
  const n = xs.length;
  if (n === 0 || ys.length !== n || slope.length !== n - 1) throw bad("isotonic knots must be x, y (same length) and n-1 slopes");
  return (x, v) => {
    const s = base(x, v);
    if (s !== s) return NaN;
    if (s <= xs[0]) return ys[0];
    if (s >= xs[n - 1]) return ys[n - 1];
    let lo = 0, hi = n; // bisect_right: the first index whose knot is > s
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (s < xs[mid]) hi = mid; else lo = mid + 1;
    }
    const j = lo;
    const ylo = ys[j - 1], yhi = ys[j];
    let p = slope[j - 1] * (s - xs[j - 1]) + ylo;
    if (p < ylo) p = ylo; else if (p > yhi) p = yhi;
    return p;
  };
}

/** LightGBM trees as closedloop.intelligence.lightgbm.PyForest scores them. @returns {Score} */
function forest(/** @type {any} */ spec, /** @type {any} */ bad, /** @type {any} */ feat) {
  const arr = (/** @type {any} */ a, /** @type {string} */ name) => {
    if (!Array.isArray(a)) throw bad(`'${name}' must be a list`);
    return a;
  };
  const roots = Int32Array.from(arr(spec.roots, "roots"));
  const feature = Int32Array.from(arr(spec.feature, "feature").map(feat));
  const threshold = Float64Array.from(arr(spec.threshold, "threshold"));
  const flags = Int32Array.from(arr(spec.flags, "flags"));
  const left = Int32Array.from(arr(spec.left, "left"));
  const right = Int32Array.from(arr(spec.right, "right"));
  const leaves = Float64Array.from(arr(spec.leaves, "leaves"));
  const nNodes = feature.length, nLeaves = leaves.length;
  if (threshold.length !== nNodes || flags.length !== nNodes || left.length !== nNodes || right.length !== nNodes) {
    throw bad("the tree arrays must have one entry per node");
  }
  // every child a later node (no cycle) or a leaf in range: a walk always ends
  const okChild = (/** @type {number} */ c, /** @type {number} */ parent) => (c >= 0 ? c > parent && c < nNodes : ~c < nLeaves);
  for (let i = 0; i < nNodes; i++) if (!okChild(left[i], i) || !okChild(right[i], i)) throw bad(`node ${i} has a child out of order`);
  for (const r of roots) if (!okChild(r, -1)) throw bad(`a tree root ${r} is out of range`);
  const kzero = spec.kzero, divisor = spec.divisor, scale = spec.scale, binary = spec.binary === true;
  if (typeof kzero !== "number" || typeof divisor !== "number" || typeof scale !== "number") throw bad("kzero, divisor, scale");
  return (x) => {
    let raw = 0;
    for (let t = 0; t < roots.length; t++) {
      let node = roots[t];
      while (node >= 0) {
        let v = x[feature[node]];
        const fl = flags[node];
        const missing = (fl >> 1) & 3;
        if (v !== v) {
          if (missing === 2) { node = fl & 1 ? left[node] : right[node]; continue; }
          v = 0;
        } else if (Math.abs(v) <= kzero) {
          v = 0;
        }
        if (missing === 1 && v === 0) { node = fl & 1 ? left[node] : right[node]; continue; }
        node = v <= threshold[node] ? left[node] : right[node];
      }
      raw = raw + leaves[~node];
    }
    if (divisor > 0) raw = raw / divisor;
    return binary ? sigmoid(scale * raw) : raw;
  };
}
