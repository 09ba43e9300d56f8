// Context validation: the rules of closedloop.context (Schema._validate_slow and each field's
// check), applied to one context object — fields in declaration order, then undeclared keys when
// the schema forbids them. The first broken rule throws a ContextError naming the field.
//
// JavaScript cannot tell a JSON integer from a float with an integral value (3 and 3.0 parse
// alike): an Int field takes any integral number; Python refuses 3.0. Integers beyond 2**53 are
// the doubles JSON.parse made of them (Python keeps them exact and converts them to the same
// double when it computes features).

import { BundleError, ContextError } from "./errors.js";

const TEXT_RULE = "text UTF-8 can encode (no lone surrogate)";
const TWO63 = 9223372036854775808;
const SURROGATE = /[\uD800-\uDFFF]/;
const LONE = /\p{Surrogate}/u;

/** Code points in `s` (Python's len). @param {string} s */
export function codePoints(s) {
  if (!SURROGATE.test(s)) return s.length;
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** Whether `s` holds no lone surrogate (text UTF-8 can encode). @type {(s: string) => boolean} */
const wellFormed = typeof (/** @type {any} */ ("").isWellFormed) === "function"
  ? (s) => /** @type {any} */ (s).isWellFormed()
  : (s) => !SURROGATE.test(s) || !LONE.test(s);

/** @param {any} f */
function checker(f) {
  const name = f.name;
  if (f.kind === "float") {
    const ge = f.ge, le = f.le, nonfinite = f.nonfinite, dflt = f.default;
    return (/** @type {any} */ v) => {
      if (typeof v !== "number") throw new ContextError(name, f.rule, v);
      if (!Number.isFinite(v)) {
        if (nonfinite === "keep") return v;
        if (nonfinite === "default") return dflt;
        throw new ContextError(name, f.rule, v);
      }
      if ((ge !== null && !(v >= ge)) || (le !== null && !(v <= le))) throw new ContextError(name, f.rule, v);
      return v;
    };
  }
  if (f.kind === "int") {
    const lo = f.ge === null ? -TWO63 : Math.max(f.ge, -TWO63);
    const hi = f.le;
    return (/** @type {any} */ v) => {
      if (typeof v !== "number" || !Number.isInteger(v) || v < lo || (hi === null ? v >= TWO63 : v > hi)) {
        throw new ContextError(name, f.rule, v);
      }
      return v;
    };
  }
  if (f.kind === "bool") {
    return (/** @type {any} */ v) => {
      if (typeof v !== "boolean") throw new ContextError(name, f.rule, v);
      return v;
    };
  }
  const choices = f.choices === null ? null : new Set(f.choices);
  const limit = f.limit;
  return (/** @type {any} */ v) => {
    if (typeof v !== "string") throw new ContextError(name, f.rule, v);
    if (!wellFormed(v)) throw new ContextError(name, TEXT_RULE, v);
    if (choices !== null && !choices.has(v)) throw new ContextError(name, f.rule, v);
    if (v.length > limit && codePoints(v) > limit) {
      throw new ContextError(name, choices === null ? `a string of at most ${limit} characters` : f.rule, v);
    }
    return v;
  };
}

const KINDS = new Set(["float", "int", "bool", "str"]);

/**
 * The validator of a schema: context object → array of cleaned values, one per field in order.
 * @param {any} spec the client form's `schema`
 */
export function compileSchema(spec) {
  if (!spec || !Array.isArray(spec.fields) || spec.fields.length === 0 || !["ignore", "forbid"].includes(spec.extra)) {
    throw new BundleError("schema", "the schema must hold a non-empty list of fields and 'extra' (ignore or forbid)");
  }
  const fields = spec.fields;
  const names = fields.map((/** @type {any} */ f) => f.name);
  for (const f of fields) {
    if (typeof f.name !== "string" || !KINDS.has(f.kind) || typeof f.required !== "boolean" || typeof f.rule !== "string") {
      throw new BundleError("schema", `context field ${JSON.stringify(f.name)} is malformed`);
    }
    if (f.kind === "str" && !(Number.isInteger(f.limit) && f.limit >= 1)) {
      throw new BundleError("schema", `context field '${f.name}' needs an integer 'limit'`);
    }
  }
  const declared = new Set(names);
  const checks = fields.map(checker);
  const n = fields.length;
  const forbid = spec.extra === "forbid";
  const hasOwn = Object.prototype.hasOwnProperty;
  /** @param {any} context @returns {any[]} */
  function validate(context) {
    if (typeof context !== "object" || context === null || Array.isArray(context)) {
      throw new ContextError("<context>", "a JSON object (a mapping of field names)", context);
    }
    const out = new Array(n);
    for (let i = 0; i < n; i++) {
      const f = fields[i];
      const v = hasOwn.call(context, f.name) ? context[f.name] : undefined;
      if (v === undefined || v === null) {
        if (f.required) throw new ContextError(f.name, v === null ? f.rule : "present", v);
        out[i] = f.default;
        continue;
      }
      out[i] = checks[i](v);
    }
    if (forbid) {
      for (const key of Object.keys(context)) {
        if (!declared.has(key)) throw new ContextError(key, "a declared field (this schema forbids others)", context[key]);
      }
    }
    return out;
  }
  return { validate, names, fields };
}
