// Feature expressions: the JSON trees of closedloop.context.features (Expr.describe()), compiled
// into a list of small steps — each distinct sub-expression computed once into a slot, as the
// Python scalar form hoists shared sub-expressions — and run over one validated context.
// Nothing is evaluated as source: each step is one of the closures below.
//
// Semantics follow the Python scalar form operation for operation: IEEE-754 arithmetic (exact in
// both), comparisons as 1/0, division by zero giving the declared value, min/max propagating NaN,
// text by code points, ASCII-only lower-casing, regular expressions in the portable subset
// (translated at export, compiled with the `u` flag). Only log1p calls the math library:
// JavaScript's Math.log1p may differ from the C library's in the last bit (see the README).

import { BundleError } from "./errors.js";
import { codePoints } from "./schema.js";

/** log(1 + x): -inf at -1, NaN below (closedloop.base.numeric.log1p). @param {number} x */
export function log1p(x) {
  if (x > -1) return Math.log1p(x);
  return x === -1 ? -Infinity : NaN;
}

/** @param {string} s */
function asciiLower(s) {
  return /[A-Z]/.test(s) ? s.replace(/[A-Z]+/g, (m) => m.toLowerCase()) : s;
}

/** Non-overlapping occurrences of `lit` (non-empty) in `s`, as Python's str.count. */
function count(/** @type {string} */ s, /** @type {string} */ lit) {
  let n = 0;
  for (let i = s.indexOf(lit); i >= 0; i = s.indexOf(lit, i + lit.length)) n++;
  return n;
}

/** @type {Record<string, number>} */
const ARITY = {
  col: 0, const: 0, "+": 2, "-": 2, "*": 2, "/": 2, neg: 1, ">": 2, ">=": 2, "<": 2, "<=": 2, "==": 2, "!=": 2,
  and: 2, or: 2, not: 1, where: 3, log1p: 1, sqrt: 1, abs: 1, min: 2, max: 2, length: 1, count: 1, contains: 1,
  startswith: 1, endswith: 1, nonempty: 1, matches: 1, contains_col: 2, isin: 1, lower: 1,
};

/**
 * One step: reads child slots (a, b, c) of `s` and the context values `v`.
 * @param {any[]} node @param {number[]} k child slots @param {Map<string, {index: number, kind: string}>} fields
 * @returns {(s: any[], v: any[]) => any}
 */
function step(node, k, fields, where) {
  const [a, b, c] = k;
  const op = node[0];
  switch (op) {
    case "col": {
      const f = fields.get(node[1]);
      if (f === undefined) throw new BundleError("features", `${where} reads the undeclared context field ${JSON.stringify(node[1])}`);
      const i = f.index;
      if (f.kind === "bool") return (s, v) => (v[i] ? 1 : 0);
      return (s, v) => v[i];
    }
    case "const": {
      const value = node[1];
      if (typeof value !== "string" && !(typeof value === "number" && Number.isFinite(value))) {
        throw new BundleError("features", `${where} has a constant that is neither text nor a finite number`);
      }
      return () => value;
    }
    case "+": return (s) => s[a] + s[b];
    case "-": return (s) => s[a] - s[b];
    case "*": return (s) => s[a] * s[b];
    case "/": {
      const z = node[3];
      if (typeof z !== "number") throw new BundleError("features", `${where} has a division without its value on zero`);
      return (s) => (s[b] !== 0 ? s[a] / s[b] : z);
    }
    case "neg": return (s) => -s[a];
    case ">": return (s) => (s[a] > s[b] ? 1 : 0);
    case ">=": return (s) => (s[a] >= s[b] ? 1 : 0);
    case "<": return (s) => (s[a] < s[b] ? 1 : 0);
    case "<=": return (s) => (s[a] <= s[b] ? 1 : 0);
    case "==": return (s) => (s[a] === s[b] ? 1 : 0);
    case "!=": return (s) => (s[a] !== s[b] ? 1 : 0);
    case "and": return (s) => (s[a] !== 0 && s[b] !== 0 ? 1 : 0);
    case "or": return (s) => (s[a] !== 0 || s[b] !== 0 ? 1 : 0);
    case "not": return (s) => (s[a] === 0 ? 1 : 0);
    case "where": return (s) => (s[a] !== 0 ? s[b] : s[c]);
    case "log1p": return (s) => log1p(s[a]);
    case "sqrt": return (s) => (s[a] >= 0 ? Math.sqrt(s[a]) : NaN);
    case "abs": return (s) => Math.abs(s[a]);
    case "min": return (s) => { const x = s[a], y = s[b]; return x !== x ? x : y !== y ? y : x < y ? x : y; };
    case "max": return (s) => { const x = s[a], y = s[b]; return x !== x ? x : y !== y ? y : x > y ? x : y; };
    case "length": return (s) => codePoints(s[a]);
    case "nonempty": return (s) => (s[a] !== "" ? 1 : 0);
    case "lower": return (s) => asciiLower(s[a]);
    case "contains_col": return (s) => (s[a].includes(s[b]) ? 1 : 0);
    case "matches": {
      let re;
      try {
        re = new RegExp(String(node[3]), "u");
      } catch (e) {
        throw new BundleError("features", `${where} has a regular expression JavaScript cannot compile: ${e}`);
      }
      return (s) => (re.test(s[a]) ? 1 : 0);
    }
    case "isin": {
      if (!Array.isArray(node[2])) throw new BundleError("features", `${where} has an isin without its values`);
      const set = new Set(node[2]);
      return (s) => (set.has(s[a]) ? 1 : 0);
    }
    default: {
      const lit = node[2];
      if (typeof lit !== "string") throw new BundleError("features", `${where} has a ${op} without its text argument`);
      if (op === "count") {
        if (lit === "") throw new BundleError("features", `${where} counts the empty string`);
        return (s) => count(s[a], lit);
      }
      if (op === "contains") return (s) => (s[a].includes(lit) ? 1 : 0);
      if (op === "startswith") return (s) => (s[a].startsWith(lit) ? 1 : 0);
      return (s) => (s[a].endsWith(lit) ? 1 : 0); // endswith
    }
  }
}

/**
 * Compile expression trees into one program: `run(values)` → an array of their values.
 * @param {{name: string, expr: any[]}[]} items
 * @param {Map<string, {index: number, kind: string}>} fields
 * @param {string} what the bundle part (for errors)
 */
export function compileProgram(items, fields, what) {
  /** @type {Map<string, number>} */
  const slots = new Map();
  /** @type {((s: any[], v: any[]) => any)[]} */
  const steps = [];
  let depth = 0;
  /** @param {any} node @param {string} where @returns {number} */
  function emit(node, where) {
    if (!Array.isArray(node) || typeof node[0] !== "string" || !Object.hasOwn(ARITY, node[0])) {
      throw new BundleError(what, `${where} is not an expression the client runtime knows: ${JSON.stringify(node)?.slice(0, 80)}`);
    }
    if (++depth > 200) throw new BundleError(what, `${where} is nested too deeply`);
    const key = JSON.stringify(node);
    let slot = slots.get(key);
    if (slot === undefined) {
      const kids = [];
      for (let j = 1; j <= ARITY[node[0]]; j++) kids.push(emit(node[j], where));
      slot = steps.length;
      steps.push(step(node, kids, fields, where));
      slots.set(key, slot);
    }
    depth--;
    return slot;
  }
  const outs = items.map((it) => emit(it.expr, `${what} ${JSON.stringify(it.name)}`));
  const n = steps.length;
  const m = outs.length;
  /** @param {any[]} values @returns {any[]} */
  function run(values) {
    const s = new Array(n);
    for (let i = 0; i < n; i++) s[i] = steps[i](s, values);
    const out = new Array(m);
    for (let j = 0; j < m; j++) out[j] = s[outs[j]];
    return out;
  }
  return { run, size: n };
}
