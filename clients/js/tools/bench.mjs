// One decision's cost in Node, for bench/client.py:
//   node tools/bench.mjs BUNDLE.json CONTEXTS.json CALLS REPEATS
// CONTEXTS: a JSON array of contexts, decided in turn (each call a new decision id, as the SDK's);
// for a ranking bundle, requests with their candidates, ranked in turn (runtime.rank).
// Prints {"per_call_us": [one figure per repeat]} as JSON.
import fs from "node:fs";
import { loadBundle } from "../src/runtime/index.js";

const [bundlePath, ctxPath, callsArg, repeatsArg] = process.argv.slice(2);
const rt = loadBundle(JSON.parse(fs.readFileSync(bundlePath, "utf8")));
const contexts = JSON.parse(fs.readFileSync(ctxPath, "utf8"));
const calls = Number(callsArg), repeats = Number(repeatsArg);
let sink = 0;
const run = (/** @type {number} */ n) => {
  if (rt.kind === "ranking") for (let i = 0; i < n; i++) sink += rt.rank(contexts[i % contexts.length]).propensity;
  else for (let i = 0; i < n; i++) sink += rt.decide(contexts[i % contexts.length]).propensity;
};
run(calls); // warm-up: the JIT compiles the path
const perCall = [];
for (let r = 0; r < repeats; r++) {
  const t0 = process.hrtime.bigint();
  run(calls);
  perCall.push(Number(process.hrtime.bigint() - t0) / 1000 / calls);
}
process.stdout.write(JSON.stringify({ per_call_us: perCall, sink: sink > 0 }) + "\n");
