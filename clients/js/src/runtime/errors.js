// The runtime's two errors: a bundle it cannot load, a context it cannot decide for.

/** A bundle the runtime cannot load; `field` names the part or check that failed. */
export class BundleError extends Error {
  /** @param {string} field @param {string} detail */
  constructor(field, detail) {
    super(`Bundle check '${field}' failed: ${detail}`);
    this.name = "BundleError";
    this.field = field;
    this.detail = detail;
  }
}

/** A context that failed validation: `field`, the `rule` it must follow, the `value` it had. */
export class ContextError extends Error {
  /** @param {string} field @param {string} rule @param {unknown} value */
  constructor(field, rule, value) {
    super(rule === "present"
      ? `Context field '${field}' is required and has no default.`
      : `Context field '${field}' must be ${rule}. Got ${show(value)} instead.`);
    this.name = "ContextError";
    this.field = field;
    this.rule = rule;
    this.value = value;
  }
}

/** @param {unknown} v */
function show(v) {
  if (typeof v === "string") return JSON.stringify(v.length > 80 ? v.slice(0, 77) + "..." : v);
  if (v === undefined) return "nothing";
  if (typeof v === "number" || typeof v === "boolean" || v === null) return String(v);
  try {
    const s = JSON.stringify(v);
    return s === undefined ? typeof v : (s.length > 80 ? s.slice(0, 77) + "..." : s);
  } catch {
    return typeof v;
  }
}
