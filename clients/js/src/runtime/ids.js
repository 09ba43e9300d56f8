// Decision ids and times: what a decision is stamped with when the caller gives none.

import { ContextError } from "./errors.js";

/** WebCrypto: the browser's and Node's global (Node 18's ES modules have no global: node:crypto's). */
const webcrypto = globalThis.crypto ?? (await import("node:crypto")).webcrypto;
const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));
const POOL = new Uint8Array(16 * 256);
let poolAt = POOL.length;

/** 32 random lower-case hex digits (what the Python runtime's decision ids look like): 128 bits of
 * the platform's cryptographic generator, drawn 256 ids at a time (one call per id is slow in Node). */
export function newDecisionId() {
  if (poolAt === POOL.length) {
    webcrypto.getRandomValues(POOL);
    poolAt = 0;
  }
  let s = "";
  for (let i = poolAt; i < poolAt + 16; i++) s += HEX[POOL[i]];
  poolAt += 16;
  return s;
}

/** The decision time: nanoseconds as a bigint when `timestampNs` is given, else whole milliseconds. @param {any} opts */
export function decisionTime(opts) {
  const ns = opts.timestampNs;
  if (ns !== undefined && ns !== null) {
    try {
      return BigInt(ns);
    } catch {
      throw new ContextError("timestampNs", "an integer number of nanoseconds since the epoch", ns);
    }
  }
  const ms = opts.timestampMs ?? Date.now();
  if (!Number.isSafeInteger(ms)) throw new ContextError("timestampMs", "an integer number of milliseconds since the epoch", ms);
  return ms;
}

