// train.js: keep training the bundle's TF.js model in Node.js (pure JS, no native binding).
//
// Usage: node train.js DATA_JSON [--epochs 10] [--lr 0.001] [--batch-size 32] [--out DIR]
//   DATA_JSON  {"dims": [N, ...], "inputs": [flat values], "labels": [N targets]}
//              or {"x": nested arrays, "y": [targets]}
//   --out DIR  where the trained model.json + weights.bin go (default: trained/ beside this file);
//              bring them back into ember with `ember import-tfjs DIR/model.json PACKAGE`.
// Prints one line per epoch and a JSON summary (loss and accuracy before and after) last.
// Needs @tensorflow/tfjs: run `npm install` in this folder once.
import { readFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { examples, folderHandler, requireTf } from './node_io.js';
import { accuracy, fineTune, loadModel } from './ember_tfjs.js';

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const option = (name, fallback) => {
  const i = args.indexOf(name);
  return i >= 0 ? args.splice(i, 2)[1] : fallback;
};
const epochs = Number(option('--epochs', '10'));
const lr = Number(option('--lr', '0.001'));
const batchSize = Number(option('--batch-size', '32'));
const out = option('--out', join(here, 'trained'));
if (!args[0] || !(epochs > 0) || !(lr > 0) || !(batchSize > 0)) {
  console.error('usage: node train.js DATA_JSON [--epochs N>0] [--lr X>0] [--batch-size N>0] [--out DIR]');
  process.exit(2);
}
// Read the data before loading TF.js: a missing or malformed file is one line, not a stack trace.
let data;
try {
  data = JSON.parse(await readFile(args[0], 'utf8'));
} catch (error) {
  const why = error.code === 'ENOENT' ? 'no such file' : error.message;
  console.error(`cannot read ${args[0]} (${why}): give a JSON file with {"dims": [N, ...], ` +
    '"inputs": [flat values], "labels": [N targets]} or {"x": nested arrays, "y": [targets]}');
  process.exit(2);
}
const tf = await requireTf(here);
const meta = JSON.parse(await readFile(join(here, 'meta.json'), 'utf8'));
const model = await loadModel(tf, folderHandler(here));
const { x, y } = examples(tf, data);
if (y === null) {
  console.error(`${args[0]} has no targets: give "labels" (or "y"), one per example`);
  process.exit(2);
}
const classify = meta.task === 'classification' || (meta.task == null && meta.outputs > 1);
const before = classify ? accuracy(tf, model, meta, x, y) : null;
const start = Date.now();
const losses = await fineTune(tf, model, meta, x, y, {
  epochs, lr, batchSize,
  onEpoch: (epoch, loss) => console.log(`epoch ${epoch + 1}/${epochs} loss ${loss.toFixed(5)}`),
});
const seconds = (Date.now() - start) / 1000;
const after = classify ? accuracy(tf, model, meta, x, y) : null;
await model.save(folderHandler(out));
console.log(JSON.stringify({
  epochs, examples: x.shape[0], seconds, loss_first: losses[0], loss_last: losses[losses.length - 1],
  accuracy_before: before, accuracy_after: after, saved: out,
}));
