// ember_tfjs.js: helpers shared by the tfjs bundle's page (index.html) and its Node.js scripts.
// An ES module with no imports: every function takes the `tf` namespace (@tensorflow/tfjs).
//
//   registerEmberLayers(tf)       registers EmberGRU (torch's GRU formula) before loading a model
//   loadModel(tf, source)         tf.loadLayersModel after registering ember's layers
//   compileForTraining(tf, model, meta, lr)   the loss that matches the model's head
//   targets(tf, meta, labels)                 labels as that loss wants them
//   fineTune(tf, model, meta, x, y, options)  model.fit on examples; returns the loss per epoch
//   accuracy(tf, model, meta, x, y)           fraction of rows whose argmax equals the label

let registered = false;

export function registerEmberLayers(tf) {
  if (registered) return;
  registered = true;
  // torch.nn.GRU computes n = tanh(W_in x + b_in + r * (W_hn h + b_hn)) ("reset after"), which
  // TF.js's GRU does not offer; this layer computes exactly that, with trainable weights.
  class EmberGRU extends tf.layers.Layer {
    constructor(config) {
      super(config);
      this.units = config.units;
      this.returnSequences = Boolean(config.returnSequences);
    }
    build(inputShape) {
      const features = inputShape[inputShape.length - 1];
      const u = this.units;
      this.kernel = this.addWeight('kernel', [features, 3 * u], 'float32', tf.initializers.glorotUniform({}));
      this.recurrentKernel = this.addWeight('recurrent_kernel', [u, 3 * u], 'float32', tf.initializers.orthogonal({}));
      this.biasIh = this.addWeight('bias_ih', [3 * u], 'float32', tf.initializers.zeros());
      this.biasHh = this.addWeight('bias_hh', [3 * u], 'float32', tf.initializers.zeros());
      this.built = true;
    }
    computeOutputShape(inputShape) {
      return this.returnSequences ? [inputShape[0], inputShape[1], this.units] : [inputShape[0], this.units];
    }
    call(inputs) {
      return tf.tidy(() => {
        const x = Array.isArray(inputs) ? inputs[0] : inputs; // (N, T, C)
        const u = this.units;
        const steps = tf.unstack(x, 1);
        let h = tf.zeros([x.shape[0], u]);
        const outputs = [];
        const gx = (t) => tf.add(tf.matMul(t, this.kernel.read()), this.biasIh.read());
        for (const step of steps) {
          const [xr, xz, xn] = tf.split(gx(step), 3, 1);
          const gh = tf.add(tf.matMul(h, this.recurrentKernel.read()), this.biasHh.read());
          const [hr, hz, hn] = tf.split(gh, 3, 1);
          const r = tf.sigmoid(tf.add(xr, hr));
          const z = tf.sigmoid(tf.add(xz, hz));
          const n = tf.tanh(tf.add(xn, tf.mul(r, hn)));
          h = tf.add(tf.mul(tf.sub(1, z), n), tf.mul(z, h));
          outputs.push(h);
        }
        return this.returnSequences ? tf.stack(outputs, 1) : h;
      });
    }
    getConfig() {
      return { ...super.getConfig(), units: this.units, returnSequences: this.returnSequences };
    }
    static get className() {
      return 'EmberGRU';
    }
  }
  tf.serialization.registerClass(EmberGRU);
}

export async function loadModel(tf, source) {
  registerEmberLayers(tf);
  return tf.loadLayersModel(source);
}

// The loss ember trained with, as TF.js sees the model's head (meta is the bundle's meta.json:
// task, outputs, output_activation). Classes arrive one-hot (see targets()).
export function lossFor(tf, meta) {
  if (meta.task === 'regression') return 'meanSquaredError';
  const probabilities = ['softmax', 'sigmoid'].includes(meta.output_activation);
  if (meta.outputs === 1) {
    return probabilities ? 'binaryCrossentropy' : (y, p) => tf.losses.sigmoidCrossEntropy(y, p);
  }
  return probabilities ? 'categoricalCrossentropy' : (y, p) => tf.losses.softmaxCrossEntropy(y, p);
}

// Class labels (N,) as the loss wants them: one-hot (N, C) for several classes, (N, 1) otherwise.
export function targets(tf, meta, labels) {
  return tf.tidy(() => {
    const flat = tf.reshape(labels, [-1]);
    if (meta.task === 'regression' || meta.outputs === 1) return tf.reshape(flat, [-1, meta.outputs]);
    return tf.oneHot(tf.cast(flat, 'int32'), meta.outputs);
  });
}

export function compileForTraining(tf, model, meta, lr = 1e-3) {
  model.compile({ optimizer: tf.train.adam(lr), loss: lossFor(tf, meta) });
}

export async function fineTune(tf, model, meta, x, labels, { epochs = 10, lr = 1e-3, batchSize = 32, onEpoch } = {}) {
  compileForTraining(tf, model, meta, lr);
  const y = targets(tf, meta, labels);
  const losses = [];
  try {
    await model.fit(x, y, {
      epochs,
      batchSize,
      shuffle: true,
      verbose: 0,
      callbacks: {
        onEpochEnd: async (epoch, logs) => {
          losses.push(logs.loss);
          if (onEpoch) await onEpoch(epoch, logs.loss);
        },
      },
    });
  } finally {
    y.dispose();
  }
  return losses;
}

export function accuracy(tf, model, meta, x, y) {
  return tf.tidy(() => {
    const p = model.predict(x);
    const predicted = meta.outputs === 1 ? tf.cast(tf.greater(p.reshape([-1]), meta.output_activation === 'sigmoid' ? 0.5 : 0), 'int32') : p.argMax(-1);
    return tf.mean(tf.cast(tf.equal(predicted, tf.cast(tf.reshape(y, [-1]), 'int32')), 'float32')).dataSync()[0];
  });
}
