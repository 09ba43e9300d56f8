// The runtime the SDK tests load bundles with: the real one (clients/js/src/runtime) when it is
// in this checkout, else the stand-in beside this file.
let mod;
try {
  mod = await import("../../src/runtime/index.js");
} catch (e) {
  if (e?.code !== "ERR_MODULE_NOT_FOUND") throw e;
  mod = await import("./stand_in_runtime.js");
}
export const loadBundle = mod.loadBundle;
export const standIn = !("uniform" in mod);
