// predict.js: run the bundle's TF.js model under Node.js on a samples file.
//
// Usage: node predict.js [SAMPLES_JSON] [--model DIR] [--out RESULT_JSON]
//   SAMPLES_JSON  {"dims": [...], "inputs": [flat values]} (default: samples.json beside this file)
//   --model DIR   a model folder (model.json + weights.bin; default: this folder)
//   --out FILE    write {"dims", "outputs"} there (default: print it on stdout)
// Needs @tensorflow/tfjs: run `npm install` in this folder once.
import { readFile, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { folderHandler, requireTf } from './node_io.js';
import { loadModel } from './ember_tfjs.js';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const modelDir = option('--model', here);
const out = option('--out', null);
const samplesFile = args[0] || join(here, 'samples.json');
const tf = await requireTf(here);
const model = await loadModel(tf, folderHandler(modelDir));
const samples = JSON.parse(await readFile(samplesFile, 'utf8'));
const y = model.predict(tf.tensor(Float32Array.from(samples.inputs), samples.dims));
const result = JSON.stringify({ dims: y.shape, outputs: Array.from(await y.data()) });
if (out) await writeFile(out, result);
else process.stdout.write(result + '\n');
