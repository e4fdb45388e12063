// node_io.js: read and write a TF.js Layers model folder (model.json + weights.bin) under Node.js
// with the pure-JS @tensorflow/tfjs package (tfjs-node's native binding is not needed).
import { createRequire } from 'node:module';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';

// @tensorflow/tfjs from `dir`'s node_modules (the bundle after `npm install`, or ember's cache).
export async function requireTf(dir) {
  const tf = createRequire(join(resolve(dir), 'package.json'))('@tensorflow/tfjs');
  await tf.setBackend('cpu');
  return tf;
}

// A tf.io handler over a folder: load() reads model.json and its weight files, save() writes them.
export function folderHandler(dir) {
  return {
    async load() {
      const model = JSON.parse(await readFile(join(dir, 'model.json'), 'utf8'));
      const buffers = [];
      for (const group of model.weightsManifest) {
        for (const path of group.paths) buffers.push(await readFile(join(dir, path)));
      }
      const all = Buffer.concat(buffers);
      return {
        modelTopology: model.modelTopology,
        weightSpecs: model.weightsManifest.flatMap((group) => group.weights),
        weightData: all.buffer.slice(all.byteOffset, all.byteOffset + all.byteLength),
        format: model.format,
        generatedBy: model.generatedBy,
        convertedBy: model.convertedBy,
      };
    },
    async save(artifacts) {
      await mkdir(dir, { recursive: true });
      const parts = Array.isArray(artifacts.weightData) ? artifacts.weightData : [artifacts.weightData];
      await writeFile(join(dir, 'weights.bin'), Buffer.concat(parts.map((b) => Buffer.from(b))));
      const json = {
        format: 'layers-model',
        generatedBy: artifacts.generatedBy,
        convertedBy: 'ember',
        modelTopology: artifacts.modelTopology,
        weightsManifest: [{ paths: ['weights.bin'], weights: artifacts.weightSpecs }],
      };
      await writeFile(join(dir, 'model.json'), JSON.stringify(json));
      return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
    },
  };
}

// {dims, inputs (flat), labels?} or {x: nested arrays, y: [...]} -> tensors.
export function examples(tf, data) {
  if (Array.isArray(data.x)) {
    const x = tf.tensor(data.x);
    return { x, y: data.y ? tf.tensor1d(data.y.flat(), 'float32') : null };
  }
  const x = tf.tensor(Float32Array.from(data.inputs), data.dims);
  return { x, y: data.labels ? tf.tensor1d(data.labels, 'float32') : null };
}
