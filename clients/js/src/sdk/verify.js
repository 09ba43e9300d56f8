// The signed envelope a closedloop service serves (GET /v1/bundles/current) and
// `closedloop bundle export --target js` writes (clients/js/README.md):
//
//   {"format": "closedloop.client.bundle.signed", "format_version": 1, "payload": "<JSON text>",
//    "signature": {"algorithm": "ed25519", "key_id": "ed25519:…", "public_key": "…", "signature": "<base64>"}}
//
// The signature is Ed25519 over the bytes of "closedloop.client.bundle.v1:" followed by the
// payload's UTF-8 bytes. `openEnvelope` checks it with WebCrypto against the public keys the
// client was given (never the key the envelope carries) and returns the payload *text*: nothing
// of the payload is parsed before its signature is verified.

export const ENVELOPE_FORMAT = "closedloop.client.bundle.signed";
export const KILLSWITCH_FORMAT = "closedloop.client.killswitch";
const PREFIX = "closedloop.client.bundle.v1:";
const encoder = new TextEncoder();

/** A refusal of the SDK, naming the field or check that failed (like the runtime's errors). */
export class SdkError extends Error {
  /** @param {string} field @param {string} message */
  constructor(field, message) {
    super(`${field}: ${message}`);
    this.name = "SdkError";
    this.field = field;
  }
}

/** @param {string} text @returns {Uint8Array} */
function fromBase64(text) {
  if (typeof text !== "string" || !/^[A-Za-z0-9+/]*={0,2}$/.test(text) || text.length % 4 !== 0) throw new Error("not base64");
  const bin = atob(text);
  const out = new Uint8Array(bin.length);
  for (let i = 0; i < bin.length; i++) out[i] = bin.charCodeAt(i);
  return out;
}

/** The key id Python gives a public key: "ed25519:" and 16 hex digits of the raw key's sha256.
 * @param {Uint8Array} raw */
async function keyId(raw) {
  const d = new Uint8Array(await crypto.subtle.digest("SHA-256", raw));
  let hex = "";
  for (const b of d.subarray(0, 8)) hex += b.toString(16).padStart(2, "0");
  return `ed25519:${hex}`;
}

/**
 * The trusted keys, by key id, imported for verification.
 * @param {string[] | Record<string, string>} publicKeys base64 raw Ed25519 public keys (`closedloop key show`)
 * @returns {Promise<Map<string, CryptoKey>>}
 */
export async function trustedKeys(publicKeys) {
  const list = Array.isArray(publicKeys) ? publicKeys : publicKeys && typeof publicKeys === "object" ? Object.values(publicKeys) : null;
  if (!list || list.length === 0) throw new SdkError("publicKeys", "give at least one base64 Ed25519 public key (closedloop key show)");
  const out = new Map();
  for (const text of list) {
    let raw;
    try {
      raw = fromBase64(text);
    } catch {
      raw = null;
    }
    if (!raw || raw.length !== 32) throw new SdkError("publicKeys", `a public key must be the base64 of 32 bytes. Got ${JSON.stringify(String(text).slice(0, 60))} instead.`);
    const key = await crypto.subtle.importKey("raw", raw, { name: "Ed25519" }, false, ["verify"]);
    out.set(await keyId(raw), key);
  }
  return out;
}

/**
 * The payload text of a served document, once its signature verifies with a trusted key.
 * Throws SdkError: field "download" (not the envelope's JSON: truncated or not a document),
 * "format", or "signature" (unknown key, or a signature that does not match the payload).
 * @param {string} text the document as received
 * @param {Map<string, CryptoKey>} keys from trustedKeys
 * @returns {Promise<string>}
 */
export async function openEnvelope(text, keys) {
  let env;
  try {
    env = JSON.parse(text);
  } catch (e) {
    throw new SdkError("download", `the document is not JSON (a truncated download?): ${e.message}`);
  }
  if (!env || typeof env !== "object" || env.format !== ENVELOPE_FORMAT || env.format_version !== 1) {
    throw new SdkError("format", `the document must be a ${ENVELOPE_FORMAT} envelope, version 1`);
  }
  const sig = env.signature;
  if (typeof env.payload !== "string" || !sig || typeof sig !== "object") {
    throw new SdkError("signature", "the document is not signed (no payload text or no signature)");
  }
  const key = sig.algorithm === "ed25519" ? keys.get(sig.key_id) : undefined;
  if (!key) {
    throw new SdkError("signature", `the document is signed by key ${JSON.stringify(String(sig.key_id).slice(0, 40))}, which this client does not trust (trusted: ${[...keys.keys()].join(", ")})`);
  }
  let raw;
  try {
    raw = fromBase64(sig.signature);
  } catch {
    throw new SdkError("signature", "the signature is not base64");
  }
  const ok = await crypto.subtle.verify({ name: "Ed25519" }, key, raw, encoder.encode(PREFIX + env.payload));
  if (!ok) throw new SdkError("signature", `the signature by key ${sig.key_id} does not match the payload (forged or corrupted)`);
  return env.payload;
}
