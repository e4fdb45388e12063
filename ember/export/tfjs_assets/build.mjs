// build.mjs: ember's tfjs export under Node.js. Builds the TF.js Layers model from ember's converted
// topology, sets the converted weights, saves model.json + weights.bin, and predicts the stored
// sample for the parity check.
//
// Usage: node build.mjs SPEC_JSON WEIGHTS_F32 OUT_DIR NPM_DIR RESULT_JSON
import { readFile, writeFile } from 'node:fs/promises';
import { folderHandler, requireTf } from './node_io.js';
import { registerEmberLayers } from './ember_tfjs.js';

const [specFile, weightsFile, outDir, npmDir, resultFile] = process.argv.slice(2);
if (!resultFile) {
  console.error('usage: node build.mjs SPEC_JSON WEIGHTS_F32 OUT_DIR NPM_DIR RESULT_JSON');
  process.exit(2);
}
const tf = await requireTf(npmDir);
registerEmberLayers(tf);
const spec = JSON.parse(await readFile(specFile, 'utf8'));
const model = await tf.models.modelFromJSON({ modelTopology: spec.topology });
const raw = await readFile(weightsFile);
const flat = new Float32Array(raw.buffer, raw.byteOffset, raw.byteLength / 4);
let offset = 0;
for (const { layer: name, shapes } of spec.weights) {
  const layer = model.getLayer(name);
  if (layer.weights.length !== shapes.length) {
    throw new Error(`layer ${name}: TF.js has ${layer.weights.length} weights, ember converted ${shapes.length}`);
  }
  layer.setWeights(shapes.map((shape, i) => {
    const expected = layer.weights[i].shape;
    if (JSON.stringify(expected) !== JSON.stringify(shape)) {
      throw new Error(`weight ${layer.weights[i].name}: TF.js expects [${expected}], ember has [${shape}]`);
    }
    const size = shape.reduce((a, b) => a * b, 1);
    const t = tf.tensor(flat.subarray(offset, offset + size), shape);
    offset += size;
    return t;
  }));
}
await model.save(folderHandler(outDir));
const x = tf.tensor(Float32Array.from(spec.sample.inputs), spec.sample.dims);
const y = model.predict(x);
await writeFile(resultFile, JSON.stringify({
  dims: y.shape,
  outputs: Array.from(await y.data()),
  weight_names: model.weights.map((w) => w.originalName || w.name),
}));
