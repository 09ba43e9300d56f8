// A stand-in for clients/js/src/runtime (the JavaScript runtime, built beside the SDK): the
// contract's shape only — loadBundle(form, expect?) → { bundleId, system, schemaVersion,
// decide(context, { decisionId, unit }) } or a BundleError with .field. It decides the system's
// default action. The SDK tests use the real runtime when it is present (runtime.js here).

export class BundleError extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

export class ContextError extends Error {
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.field = field;
  }
}

export function loadBundle(form, expect) {
  if (!form || form.format !== "closedloop.client.bundle" || !form.bundle) throw new BundleError("format", "not a client form");
  const b = form.bundle;
  if (expect?.system && b.system !== expect.system) throw new BundleError("system", `for ${b.system}`);
  if (expect?.schemaVersion && b.schema_version !== expect.schemaVersion) throw new BundleError("schema_version", `for ${b.schema_version}`);
  if (!Array.isArray(form.actions) || !Number.isInteger(form.default)) throw new BundleError("actions", "missing");
  const action = form.actions[form.default];
  return {
    bundleId: b.id, system: b.system, schemaVersion: b.schema_version,
    decide(context, { decisionId, unit } = {}) {
      if (!context || typeof context !== "object" || Array.isArray(context)) throw new ContextError("<context>", "a JSON object");
      if (typeof context[form.unit] !== "string" || !context[form.unit]) throw new ContextError(form.unit, "present");
      if (unit !== undefined && String(context[form.unit]) !== unit) throw new ContextError(form.unit, `must be ${unit}`);
      return { decisionId, action, propensity: 1, score: 0.5, why: "stand-in", guardrail: null, killswitch: false, flight: null };
    },
  };
}
