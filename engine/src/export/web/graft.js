// Graft's offline classifier: the runtime (a WebAssembly module, below as base64) and the model in
// model.js. No network request: it works from any static host and from file://.
//
//   const classifier = await Graft.load();          // the model of model.js
//   const results = await classifier.classify(x);   // x: a File/Blob, bytes, <img>, <video>, <canvas>,
//                                                   // ImageBitmap or ImageData
//   results[0].label, results[0].probability        // sorted, most likely first
(function (global) {
  "use strict";
  const RUNTIME = "__GRAFT_RUNTIME_BASE64__";

  function fromBase64(text) {
    const binary = atob(text);
    const bytes = new Uint8Array(binary.length);
    for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
    return bytes;
  }

  async function load(model) {
    model = model === undefined ? global.GRAFT_MODEL : model;
    if (model === undefined) throw new Error("no model: load model.js before graft.js, or pass one");
    const { instance } = await WebAssembly.instantiate(fromBase64(RUNTIME), {});
    const rt = instance.exports;
    // Views of the module's memory are made after each call: a call may grow (and so move) it.
    const text = () =>
      new TextDecoder().decode(new Uint8Array(rt.memory.buffer, rt.graft_text_ptr(), rt.graft_text_len()).slice());
    const withBytes = (bytes, call) => {
      const ptr = rt.graft_alloc(bytes.length);
      new Uint8Array(rt.memory.buffer, ptr, bytes.length).set(bytes);
      const status = call(ptr);
      rt.graft_free(ptr, bytes.length);
      if (status !== 0) throw new Error(text());
    };
    const file = typeof model === "string" ? fromBase64(model) : new Uint8Array(model);
    withBytes(file, (ptr) => rt.graft_load(ptr, file.length));
    if (rt.graft_info() !== 0) throw new Error(text());
    const info = JSON.parse(text());
    const results = () => {
      const probabilities = new Float32Array(rt.memory.buffer, rt.graft_output_ptr(), rt.graft_output_len());
      return Array.from(probabilities, (probability, index) => ({ label: info.labels[index], index, probability }))
        .sort((a, b) => b.probability - a.probability || a.index - b.index);
    };
    const pixels = (source) => {
      if (typeof ImageData !== "undefined" && source instanceof ImageData) return source;
      const width = source.videoWidth || source.naturalWidth || source.width;
      const height = source.videoHeight || source.naturalHeight || source.height;
      if (!width || !height) throw new Error("the picture has no pixels yet");
      const canvas = document.createElement("canvas");
      canvas.width = width;
      canvas.height = height;
      const context = canvas.getContext("2d");
      context.drawImage(source, 0, 0, width, height);
      return context.getImageData(0, 0, width, height);
    };
    async function classify(input) {
      if (typeof Blob !== "undefined" && input instanceof Blob) input = await input.arrayBuffer();
      if (input instanceof ArrayBuffer) input = new Uint8Array(input);
      if (input instanceof Uint8Array) {
        withBytes(input, (ptr) => rt.graft_classify_file(ptr, input.length));
      } else {
        const image = pixels(input);
        withBytes(image.data, (ptr) => rt.graft_classify_rgba(ptr, image.width, image.height));
      }
      return results();
    }
    return { labels: info.labels, model: info.model, preprocessing: info.preprocessing, classify };
  }

  global.Graft = { load };
})(globalThis);
