// The training worker's script: starts the build the page chose (`?build=worker-cpu`, the CPU
// only, or `?build=worker`, with WebGPU), trunk's no-modules glue then its wasm. When either cannot
// be loaded (offline with a build not yet stored for offline use, a file missing from the host, a
// browser without WebAssembly SIMD) it tells the page why, as the worker's `failed` event, instead
// of leaving the page waiting for `ready`: a wasm that fails to load is a rejected promise here,
// which the page's `Worker` never hears of.
const build = new URL(self.location.href).searchParams.get("build");

function fail(error) {
  const message =
    `The training engine could not be loaded (${build}_bg.wasm: ${error}). ` +
    "If this device is offline, this engine has not been stored for offline use yet: reconnect and " +
    "reload, or choose another \"Compute on\".";
  self.postMessage([JSON.stringify({ type: "failed", request: "start", message })]);
}

if (build !== "worker" && build !== "worker-cpu") {
  fail(`no engine called ${JSON.stringify(build)}`);
} else {
  try {
    importScripts(`./${build}.js`);
    wasm_bindgen(`./${build}_bg.wasm`).catch(fail);
  } catch (error) {
    fail(error);
  }
}
