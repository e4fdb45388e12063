// node_predict.js: run an ember web bundle under Node.js (onnxruntime-node) on its samples.json.
//
// Usage: node node_predict.js WEB_DIR NPM_DIR [FEEDS_JSON]
//   WEB_DIR     the bundle (ember.js, model.json, model.onnx, samples.json)
//   NPM_DIR     a folder whose node_modules holds onnxruntime-node
//   FEEDS_JSON  named inputs {name: {data, dims}} for model.run (several inputs, any dtype)
// Prints {"dims": [...], "outputs": [...], "labels": [...]} as JSON on stdout, or with
// FEEDS_JSON every output: {"named": {name: {"dims": [...], "data": [...]}}}.
import { createRequire } from 'node:module';
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';

const [webDir, npmDir, feedsFile] = process.argv.slice(2);
if (!webDir || !npmDir) {
  console.error('usage: node node_predict.js WEB_DIR NPM_DIR');
  process.exit(2);
}
const ort = createRequire(join(resolve(npmDir), 'package.json'))('onnxruntime-node');
const { load } = await import(pathToFileURL(join(resolve(webDir), 'ember.js')).href);
const model = await load(resolve(webDir), { ort });
if (feedsFile) {
  const outputs = await model.run(JSON.parse(await readFile(feedsFile, 'utf8')));
  const named = {};
  for (const [name, t] of Object.entries(outputs)) named[name] = { dims: t.dims, data: Array.from(t.data) };
  process.stdout.write(JSON.stringify({ named })); // no process.exit: it would cut a piped write
} else {
  const samples = JSON.parse(await readFile(join(webDir, 'samples.json'), 'utf8'));
  const result = await model.predict(Float32Array.from(samples.inputs), samples.dims);
  process.stdout.write(JSON.stringify({
    dims: result.dims,
    outputs: Array.from(result.outputs),
    labels: result.labels,
  }));
}
