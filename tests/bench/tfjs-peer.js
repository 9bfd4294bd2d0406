// The peer Graft measures itself against: TensorFlow.js running MobileNetV2 1.0 (same layers as
// torchvision's: 17 inverted residual blocks, 1280-wide pooled embedding) on each of its backends in
// the same headless Chrome. Weights are random: throughput does not depend on their values, and the
// published TF.js weights live on a host this machine cannot reach.
"use strict";

const SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];

function convBn(x, filters, kernelSize, strides, activation) {
  x = tf.layers.conv2d({ filters, kernelSize, strides, padding: "same", useBias: false }).apply(x);
  x = tf.layers.batchNormalization({ epsilon: 1e-5 }).apply(x);
  return activation ? tf.layers.reLU({ maxValue: 6 }).apply(x) : x;
}

function depthwiseBn(x, strides) {
  x = tf.layers.depthwiseConv2d({ kernelSize: 3, strides, padding: "same", useBias: false }).apply(x);
  x = tf.layers.batchNormalization({ epsilon: 1e-5 }).apply(x);
  return tf.layers.reLU({ maxValue: 6 }).apply(x);
}

function mobilenetV2Embedding() {
  const input = tf.input({ shape: [224, 224, 3] });
  let x = convBn(input, 32, 3, 2, true);
  let channels = 32;
  for (const [t, c, n, s] of SETTINGS) {
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      let h = t === 1 ? x : convBn(x, channels * t, 1, 1, true);
      h = depthwiseBn(h, stride);
      h = convBn(h, c, 1, 1, false);
      x = stride === 1 && channels === c ? tf.layers.add().apply([x, h]) : h;
      channels = c;
    }
  }
  x = convBn(x, 1280, 1, 1, true);
  return tf.model({ inputs: input, outputs: tf.layers.globalAveragePooling2d({}).apply(x) });
}

async function throughput(model, batch, minIterations, minMs, maxMs) {
  const input = tf.randomNormal([batch, 224, 224, 3]);
  const warmStart = performance.now();
  let out = model.predict(input);
  await out.data();
  out.dispose();
  const firstCallS = (performance.now() - warmStart) / 1000;
  const start = performance.now();
  let iterations = 0;
  while ((iterations < minIterations || performance.now() - start < minMs) && performance.now() - start < maxMs) {
    out = model.predict(input);
    await out.data();
    out.dispose();
    iterations++;
  }
  input.dispose();
  const seconds = (performance.now() - start) / 1000;
  return { batch, iterations, seconds, firstCallS, imagesPerSecond: (iterations * batch) / seconds };
}

async function run() {
  tf.wasm.setWasmPaths("tfjs/");
  const results = [];
  for (const backend of ["webgpu", "wasm", "webgl", "cpu"]) {
    document.getElementById("status").textContent = `running ${backend}…`;
    let ok = false;
    try {
      ok = await tf.setBackend(backend);
      await tf.ready();
    } catch (error) {
      results.push({ backend, error: String(error) });
      continue;
    }
    if (!ok || tf.getBackend() !== backend) {
      results.push({ backend, error: "backend unavailable" });
      continue;
    }
    const model = mobilenetV2Embedding();
    // The CPU backend takes many seconds per image: bound it so the run ends.
    const slow = backend === "cpu";
    for (const batch of [1, 16]) {
      if (slow && batch === 16) continue;
      try {
        results.push({ backend, ...(await throughput(model, batch, slow ? 1 : 3, slow ? 0 : 3000, 60000)) });
      } catch (error) {
        results.push({ backend, batch, error: String(error) });
      }
    }
    model.dispose();
  }
  document.getElementById("results").textContent = JSON.stringify(results);
  document.getElementById("status").textContent = "done";
}

run().catch((error) => {
  document.getElementById("status").textContent = `failed: ${error}`;
});
