// The peer Graft measures itself against: TensorFlow.js running MobileNetV2 1.0 (same layers as
// torchvision's: 17 inverted residual blocks, 1280-wide pooled embedding) on each of its backends in
// the same headless Chrome. Written as TF.js runs a converted inference graph at its best: BatchNorm
// folded into each convolution, every convolution one fused op with its bias and ReLU6
// (`tf.fused.conv2d` / `tf.fused.depthwiseConv2d`, XNNPACK on the wasm backend) — the same work
// Graft does. Weights are random: throughput does not depend on their values, and the published
// TF.js weights live on a host this machine cannot reach.
"use strict";

const SETTINGS = [[1, 16, 1, 1], [6, 24, 2, 2], [6, 32, 3, 2], [6, 64, 4, 2], [6, 96, 3, 1], [6, 160, 3, 2], [6, 320, 1, 1]];

function conv(inChannels, outChannels, kernel, stride, relu6) {
  return {
    filter: tf.randomNormal([kernel, kernel, inChannels, outChannels], 0, 0.05),
    bias: tf.randomNormal([outChannels], 0, 0.05),
    stride,
    activation: relu6 ? "relu6" : "linear",
  };
}

function depthwise(channels, stride) {
  return {
    filter: tf.randomNormal([3, 3, channels, 1], 0, 0.05),
    bias: tf.randomNormal([channels], 0, 0.05),
    stride,
  };
}

function mobilenetV2Embedding() {
  const stem = conv(3, 32, 3, 2, true);
  const blocks = [];
  let channels = 32;
  for (const [t, c, n, s] of SETTINGS) {
    for (let i = 0; i < n; i++) {
      const stride = i === 0 ? s : 1;
      const hidden = channels * t;
      blocks.push({
        expand: t === 1 ? null : conv(channels, hidden, 1, 1, true),
        depthwise: depthwise(hidden, stride),
        project: conv(hidden, c, 1, 1, false),
        residual: stride === 1 && channels === c,
      });
      channels = c;
    }
  }
  const head = conv(channels, 1280, 1, 1, true);
  const weights = [stem, head, ...blocks.flatMap((b) => [b.expand, b.depthwise, b.project].filter(Boolean))];
  const applyConv = (x, c) =>
    tf.fused.conv2d({ x, filter: c.filter, strides: c.stride, pad: "same", bias: c.bias, activation: c.activation });
  const applyDepthwise = (x, d) =>
    tf.fused.depthwiseConv2d({ x, filter: d.filter, strides: d.stride, pad: "same", bias: d.bias, activation: "relu6" });
  return {
    predict(input) {
      return tf.tidy(() => {
        let x = applyConv(input, stem);
        for (const block of blocks) {
          let h = block.expand ? applyConv(x, block.expand) : x;
          h = applyConv(applyDepthwise(h, block.depthwise), block.project);
          x = block.residual ? tf.add(x, h) : h;
        }
        return tf.mean(applyConv(x, head), [1, 2]);
      });
    },
    dispose() {
      for (const w of weights) {
        w.filter.dispose();
        w.bias.dispose();
      }
    },
  };
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
  // One thread per core (TF.js's own default is half the cores, at least one).
  const threadsParam = new URLSearchParams(location.search).get("threads");
  tf.wasm.setThreadsCount(threadsParam ? Number(threadsParam) : navigator.hardwareConcurrency);
  const results = [];
  for (const backend of (new URLSearchParams(location.search).get("backends") || "webgpu,wasm,webgl,cpu").split(",")) {
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
    // The wasm backend's threads (more than one when the page is cross-origin isolated).
    const threads = backend === "wasm" && tf.wasm.getThreadsCount ? tf.wasm.getThreadsCount() : undefined;
    if (backend === "wasm") {
      results.push({
        backend,
        info: {
          crossOriginIsolated: self.crossOriginIsolated,
          multithread: await tf.env().getAsync("WASM_HAS_MULTITHREAD_SUPPORT"),
          simd: await tf.env().getAsync("WASM_HAS_SIMD_SUPPORT"),
          hardwareConcurrency: navigator.hardwareConcurrency,
          threads,
        },
      });
    }
    // The CPU backend takes many seconds per image: bound it so the run ends.
    const slow = backend === "cpu";
    for (const batch of [1, 16]) {
      if (slow && batch === 16) continue;
      try {
        results.push({ backend, threads, ...(await throughput(model, batch, slow ? 1 : 3, slow ? 0 : 3000, 60000)) });
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
