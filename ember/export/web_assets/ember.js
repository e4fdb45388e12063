// ember.js: run an ember web bundle (model.onnx + model.json) with ONNX Runtime.
//
// The same module runs in a browser (onnxruntime-web, wasm backend, single-threaded, loaded from
// ./ort/ next to this file: no CDN, no cross-origin-isolation headers) and in Node.js
// (onnxruntime-node, imported by name or passed in as `options.ort`).
//
//   import { load } from './ember.js';
//   const model = await load();                       // the folder this file lives in
//   const result = await model.predict(pixels);       // Float32Array or (nested) array
//   result.labels[0], result.probabilities[0], result.outputs, result.dims
//
// Models with several named inputs of any dtype (token ids and masks are int64):
//   const out = await model.run({input_ids: {data: [[101, 7, 102]], dims: [1, 3]},
//                                attention_mask: {data: [[1, 1, 1]], dims: [1, 3]}});
//   out.logits.dims, out.logits.data      // every output by name

const IS_NODE =
  typeof process !== 'undefined' && !!(process.versions && process.versions.node) &&
  typeof window === 'undefined';

/** The folder this module was loaded from (a URL ending in '/'). */
export const BUNDLE_URL = new URL('./', import.meta.url).href;

/**
 * Load a bundle: `model.json` (signature, labels) and `model.onnx` from `url`.
 *
 * @param {string|URL} [url] folder of the bundle (default: the folder of ember.js). In Node.js a
 *   filesystem path or a file:// URL.
 * @param {{ort?: object, sessionOptions?: object}} [options] `ort`: an onnxruntime module to use
 *   instead of the default (onnxruntime-web in browsers, onnxruntime-node in Node.js).
 * @returns {Promise<EmberModel>}
 */
export async function load(url = BUNDLE_URL, options = {}) {
  const base = folderUrl(url);
  const meta = JSON.parse(new TextDecoder().decode(await readBytes(new URL('model.json', base))));
  const ort = options.ort || (await defaultRuntime());
  const modelBytes = await readBytes(new URL(meta.model || 'model.onnx', base));
  const session = await ort.InferenceSession.create(modelBytes, {
    executionProviders: IS_NODE ? ['cpu'] : ['wasm'],
    graphOptimizationLevel: 'all',
    ...(options.sessionOptions || {}),
  });
  return new EmberModel(ort, session, meta);
}

/** A loaded model: `predict(input, dims)` runs one batch. */
export class EmberModel {
  constructor(ort, session, meta) {
    this.ort = ort;
    this.session = session;
    this.meta = meta;
    const signature = meta.signature || {};
    this.inputName = pick(signature.inputs, session.inputNames);
    this.outputName = pick(signature.outputs, session.outputNames);
    this.inputShape = (signature.inputs && signature.inputs[0].shape) || null; // e.g. [-1, 1, 8, 8]
  }

  /** Number of values in one sample (the input shape without its batch dimension). */
  get sampleSize() {
    if (!this.inputShape) return null;
    return this.inputShape.slice(1).reduce((a, b) => a * b, 1);
  }

  /**
   * Run the model.
   *
   * @param {Float32Array|number[]|number[][]} input values, row-major; one or more samples.
   * @param {number[]} [dims] full input shape; default: [n, ...signature shape without batch].
   * @returns {Promise<{dims: number[], outputs: Float32Array, probabilities: number[][]|null,
   *   classes: number[]|null, labels: string[]|null}>}
   */
  async predict(input, dims) {
    const data = input instanceof Float32Array ? input : Float32Array.from(flatten(input));
    const shape = dims || this.defaultDims(data.length);
    const count = shape.reduce((a, b) => a * b, 1);
    if (count !== data.length) {
      throw new Error(
        `predict: dims [${shape}] need ${count} values, received ${data.length} values`);
    }
    const feeds = { [this.inputName]: new this.ort.Tensor('float32', data, shape) };
    const results = await this.session.run(feeds);
    const out = results[this.outputName];
    const outputs = Float32Array.from(out.data);
    const outDims = Array.from(out.dims, Number);
    return { dims: outDims, outputs, ...this.classify(outputs, outDims) };
  }

  /**
   * Run the model on named inputs of any dtype (int64 ids become BigInt64Array tensors).
   *
   * @param {Object<string, {data: Array|TypedArray, dims: number[]}>} inputs one entry per input
   *   of the signature, values row-major (nested arrays are flattened).
   * @returns {Promise<Object<string, {dims: number[], data: Float32Array|Array}>>} every output.
   */
  async run(inputs) {
    const specs = (this.meta.signature && this.meta.signature.inputs) || [];
    const feeds = {};
    for (const spec of specs) {
      const given = inputs[spec.name];
      if (!given) throw new Error(`run: missing input '${spec.name}'`);
      const count = given.dims.reduce((a, b) => a * b, 1);
      const data = typedArray(spec.dtype, flatten(given.data));
      if (data.length !== count) {
        throw new Error(`run: '${spec.name}' dims [${given.dims}] need ${count} values, received ${data.length}`);
      }
      feeds[spec.name] = new this.ort.Tensor(ORT_TYPES[spec.dtype] || 'float32', data, given.dims);
    }
    const results = await this.session.run(feeds);
    const out = {};
    for (const name of this.session.outputNames) {
      const t = results[name];
      const data = t.data instanceof BigInt64Array ? Array.from(t.data, Number) : Float32Array.from(t.data);
      out[name] = { dims: Array.from(t.dims, Number), data };
    }
    return out;
  }

  defaultDims(length) {
    const per = this.sampleSize;
    if (!per || per <= 0 || this.inputShape.slice(1).some((d) => d < 0)) {
      throw new Error('predict: this model has dynamic non-batch dimensions; pass `dims`');
    }
    if (length === 0 || length % per !== 0) {
      throw new Error(
        `predict: expected a multiple of ${per} values (one sample has shape ` +
        `[${this.inputShape.slice(1)}]), received ${length} values`);
    }
    return [length / per, ...this.inputShape.slice(1)];
  }

  classify(outputs, dims) {
    if (this.meta.task !== 'classification' || dims.length !== 2) {
      return { probabilities: null, classes: null, labels: null };
    }
    const [rows, cols] = dims;
    const probabilities = [];
    const classes = [];
    for (let r = 0; r < rows; r++) {
      const row = Array.from(outputs.subarray(r * cols, (r + 1) * cols));
      const p = isDistribution(row) ? row : softmax(row);
      probabilities.push(p);
      classes.push(p.indexOf(Math.max(...p)));
    }
    const names = this.meta.labels;
    const labels = classes.map((k) => (names && names[k] !== undefined ? String(names[k]) : String(k)));
    return { probabilities, classes, labels };
  }
}

// ember.json dtypes -> onnxruntime tensor types and the typed arrays that hold them.
const ORT_TYPES = { float32: 'float32', int64: 'int64', int32: 'int32', bool: 'bool', uint8: 'uint8', float64: 'float64' };

function typedArray(dtype, values) {
  switch (dtype) {
    case 'int64': return BigInt64Array.from(values, (v) => BigInt(Math.trunc(Number(v))));
    case 'int32': return Int32Array.from(values);
    case 'bool': return Uint8Array.from(values, (v) => (v ? 1 : 0));
    case 'uint8': return Uint8Array.from(values);
    case 'float64': return Float64Array.from(values);
    default: return Float32Array.from(values);
  }
}

// The signature's tensor name when the ONNX graph has it, else the graph's first name.
function pick(specs, names) {
  const wanted = specs && specs[0] && specs[0].name;
  return names.includes(wanted) ? wanted : names[0];
}

function softmax(row) {
  const m = Math.max(...row);
  const e = row.map((v) => Math.exp(v - m));
  const s = e.reduce((a, b) => a + b, 0);
  return e.map((v) => v / s);
}

function isDistribution(row) {
  const s = row.reduce((a, b) => a + b, 0);
  return row.every((v) => v >= 0 && v <= 1) && Math.abs(s - 1) < 1e-4;
}

function flatten(input) {
  return Array.isArray(input) ? input.flat(Infinity) : Array.from(input);
}

function folderUrl(url) {
  let href;
  if (url instanceof URL) href = url.href;
  else if (IS_NODE && !/^[a-z]+:\/\//i.test(String(url))) href = nodePathToUrl(String(url));
  else href = new URL(String(url), globalThis.location ? globalThis.location.href : undefined).href;
  return new URL(href.endsWith('/') ? href : `${href}/`);
}

function nodePathToUrl(path) {
  const absolute = path.startsWith('/') ? path : `${process.cwd()}/${path}`;
  return `file://${absolute.split('/').map(encodeURIComponent).join('/')}`;
}

async function readBytes(url) {
  if (url.protocol === 'file:' && IS_NODE) {
    const fs = await import('node:fs/promises');
    return new Uint8Array(await fs.readFile(url));
  }
  const response = await fetch(url);
  if (!response.ok) throw new Error(`cannot fetch ${url}: HTTP ${response.status}`);
  return new Uint8Array(await response.arrayBuffer());
}

async function defaultRuntime() {
  if (IS_NODE) {
    const mod = await import('onnxruntime-node');
    return mod.InferenceSession ? mod : mod.default;
  }
  const ort = await import(new URL('./ort/ort.wasm.min.mjs', import.meta.url).href);
  ort.env.wasm.wasmPaths = new URL('./ort/', import.meta.url).href;
  ort.env.wasm.numThreads = 1; // no SharedArrayBuffer: works without COOP/COEP headers
  ort.env.wasm.proxy = false;
  return ort;
}
