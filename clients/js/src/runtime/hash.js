// Exploration's random numbers, drawn from the decision id exactly as
// closedloop.experience.exploration.uniform does: an id of 32 lower-case hex digits (what
// DecisionIds makes) is mixed with splitmix64 (its two 64-bit halves xor-ed, the salt's multiple
// of 0xD1B54A32D192ED03 xor-ed in); any other id through BLAKE2b with an 8-byte digest over the
// UTF-8 of `${salt}:${id}`, read little-endian. 53 bits of the result make the number in [0, 1).
// BLAKE2b (RFC 7693) is implemented here on 32-bit halves: WebCrypto has no BLAKE2b.

const M64 = (1n << 64n) - 1n;
const HEX32 = /^[0-9a-f]{32}$/;
const TWO53 = 2 ** 53;

/** @param {bigint} x */
function splitmix64(x) {
  x = (x + 0x9E3779B97F4A7C15n) & M64;
  x = ((x ^ (x >> 30n)) * 0xBF58476D1CE4E5B9n) & M64;
  x = ((x ^ (x >> 27n)) * 0x94D049BB133111EBn) & M64;
  return x ^ (x >> 31n);
}

/** A number in [0, 1) determined by `decisionId` (and `salt`). @param {string} decisionId @param {number} [salt] */
export function uniform(decisionId, salt = 0) {
  let x;
  if (HEX32.test(decisionId)) {
    const v = BigInt("0x" + decisionId);
    x = splitmix64(((v >> 64n) ^ v ^ (BigInt(salt) * 0xD1B54A32D192ED03n)) & M64);
  } else {
    const d = blake2b(new TextEncoder().encode(`${salt}:${decisionId}`), 8);
    x = 0n;
    for (let i = 7; i >= 0; i--) x = (x << 8n) | BigInt(d[i]);
  }
  return Number(x >> 11n) / TWO53;
}

// -- BLAKE2b -------------------------------------------------------------------------------------
const IV = new Uint32Array([
  0xf3bcc908, 0x6a09e667, 0x84caa73b, 0xbb67ae85, 0xfe94f82b, 0x3c6ef372, 0x5f1d36f1, 0xa54ff53a,
  0xade682d1, 0x510e527f, 0x2b3e6c1f, 0x9b05688c, 0xfb41bd6b, 0x1f83d9ab, 0x137e2179, 0x5be0cd19,
]);
const SIGMA = [
  [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15], [14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3],
  [11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4], [7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8],
  [9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13], [2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9],
  [12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11], [13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10],
  [6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5], [10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0],
];

// v: 16 words as 32 uint32 (lo, hi); add64 and rotations on the halves
/** @param {Uint32Array} v @param {number} a @param {number} b */
function add64(v, a, b) {
  const lo = v[a] + v[b];
  const carry = lo >= 0x100000000 ? 1 : 0;
  v[a] = lo;
  v[a + 1] = v[a + 1] + v[b + 1] + carry;
}
/** @param {Uint32Array} v @param {number} a @param {Uint32Array} m @param {number} j */
function addM(v, a, m, j) {
  const lo = v[a] + m[j];
  const carry = lo >= 0x100000000 ? 1 : 0;
  v[a] = lo;
  v[a + 1] = v[a + 1] + m[j + 1] + carry;
}
/** v[d] = rotr64(v[d] ^ v[a], r) @param {Uint32Array} v @param {number} d @param {number} a @param {number} r */
function xorRot(v, d, a, r) {
  const lo = v[d] ^ v[a], hi = v[d + 1] ^ v[a + 1];
  if (r === 32) {
    v[d] = hi; v[d + 1] = lo;
  } else if (r < 32) {
    v[d] = (lo >>> r) | (hi << (32 - r)); v[d + 1] = (hi >>> r) | (lo << (32 - r));
  } else {
    const s = r - 32;
    v[d] = (hi >>> s) | (lo << (32 - s)); v[d + 1] = (lo >>> s) | (hi << (32 - s));
  }
}
/** @param {Uint32Array} v @param {Uint32Array} m */
function G(v, m, a, b, c, d, x, y) {
  add64(v, a, b); addM(v, a, m, x); xorRot(v, d, a, 32);
  add64(v, c, d); xorRot(v, b, c, 24);
  add64(v, a, b); addM(v, a, m, y); xorRot(v, d, a, 16);
  add64(v, c, d); xorRot(v, b, c, 63);
}
/** @param {Uint32Array} h @param {Uint8Array} block @param {number} t bytes so far @param {boolean} last */
function compress(h, block, t, last) {
  const v = new Uint32Array(32);
  const m = new Uint32Array(32);
  for (let i = 0; i < 16; i++) { v[i] = h[i]; v[i + 16] = IV[i]; }
  v[24] ^= t >>> 0;
  v[25] ^= Math.floor(t / 0x100000000);
  if (last) { v[28] = ~v[28]; v[29] = ~v[29]; }
  for (let i = 0; i < 32; i++) m[i] = block[4 * i] | (block[4 * i + 1] << 8) | (block[4 * i + 2] << 16) | (block[4 * i + 3] << 24);
  for (let r = 0; r < 12; r++) {
    const s = SIGMA[r % 10];
    G(v, m, 0, 8, 16, 24, 2 * s[0], 2 * s[1]);
    G(v, m, 2, 10, 18, 26, 2 * s[2], 2 * s[3]);
    G(v, m, 4, 12, 20, 28, 2 * s[4], 2 * s[5]);
    G(v, m, 6, 14, 22, 30, 2 * s[6], 2 * s[7]);
    G(v, m, 0, 10, 20, 30, 2 * s[8], 2 * s[9]);
    G(v, m, 2, 12, 22, 24, 2 * s[10], 2 * s[11]);
    G(v, m, 4, 14, 16, 26, 2 * s[12], 2 * s[13]);
    G(v, m, 6, 8, 18, 28, 2 * s[14], 2 * s[15]);
  }
  for (let i = 0; i < 16; i++) h[i] = h[i] ^ v[i] ^ v[i + 16];
}

/** BLAKE2b of `data` with an `outlen`-byte digest (no key). @param {Uint8Array} data @param {number} outlen */
export function blake2b(data, outlen) {
  const h = new Uint32Array(IV);
  h[0] ^= 0x01010000 ^ outlen;
  const n = data.length;
  let off = 0;
  while (n - off > 128) {
    compress(h, data.subarray(off, off + 128), off + 128, false);
    off += 128;
  }
  const last = new Uint8Array(128);
  last.set(data.subarray(off));
  compress(h, last, n, true);
  const out = new Uint8Array(outlen);
  for (let i = 0; i < outlen; i++) out[i] = h[i >> 2] >>> (8 * (i & 3));
  return out;
}
