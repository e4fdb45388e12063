"""Model and Sequential: Keras-style compile / fit / evaluate / predict / summary / save on nn.Module."""

from __future__ import annotations

import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from ember import data as _data
from ember import package as _package
from ember.layers import auto_names, check_call, materialize
from ember.train import steps

__all__ = ["Model", "Sequential"]

log = logging.getLogger(__name__)


class Model(steps.DefaultSteps, nn.Module):
    """A `torch.nn.Module` with Keras's training API. Subclass it and write `forward`.

    Override `train_step`, `validation_step` or `predict_step` (each returns a logs dict with a
    "loss" tensor, or the prediction; the defaults come from `ember.train.steps.DefaultSteps`)
    and `configure_optimizers` for full control.

    Example:
        >>> class Net(ember.Model):
        ...     def __init__(self):
        ...         super().__init__()
        ...         self.body = ember.layers.Dense(10)
        ...     def forward(self, x):
        ...         return self.body(x)
        >>> net = Net(); net.compile("adam", "cross_entropy", ["accuracy"])
        >>> history = net.fit(x, y, epochs=3, validation_split=0.2)
    """

    def compile(
        self,
        optimizer: Any = "adam",
        loss: Any = None,
        metrics: list | None = None,
        **kwargs: Any,
    ) -> None:
        """Set the optimizer, loss and metrics; see `ember.compile` for every argument."""
        steps.compile(self, optimizer, loss, metrics, **kwargs)

    def fit(
        self,
        x: Any = None,
        y: Any = None,
        *,
        batch_size: int = 32,
        epochs: int = 1,
        validation_split: float | None = None,
        validation_data: Any = None,
        callbacks: list | None = None,
        shuffle: bool = True,
        verbose: bool = True,
        class_weight: dict | None = None,
        sample_weight: Any = None,
        steps_per_epoch: int | None = None,
        validation_steps: int | None = None,
        **trainer_kwargs: Any,
    ):
        """Train on arrays, tensors, a Dataset, a DataLoader or a generator; returns a History.

        Args:
            x, y: inputs and targets (numpy arrays or tensors; a dict or tuple of them for a model
                with several inputs), or `x` a Dataset, a DataLoader, a generator or any iterable
                yielding `(x, y)` batches.
            batch_size: samples per batch (ignored for a DataLoader or a generator).
            epochs: number of epochs.
            validation_split: fraction of the training data held out for validation (the last
                samples, as in Keras).
            validation_data: (x_val, y_val), a Dataset or a DataLoader.
            callbacks: ember Callbacks (EarlyStopping, ModelCheckpoint, ...).
            shuffle: reshuffle the training data every epoch.
            verbose: show the progress bar.
            class_weight: {class index: weight}; each sample's training loss is multiplied by
                its class's weight (classes not named weigh 1), e.g. {0: 1.0, 1: 10.0}.
            sample_weight: one weight per sample of `x` (array or tensor); each sample's training
                loss is multiplied by it. Validation values stay unweighted.
            steps_per_epoch: batches per epoch taken from a generator (Keras' habit: a generator
                that loops forever and `steps_per_epoch=N`); default the whole iterable.
            validation_steps: the same for a validation generator.
            **trainer_kwargs: any `ember.Trainer` argument (precision, seed, logger, ...).
        """
        x = self._table_rows(x)
        if isinstance(validation_data, tuple) and validation_data:
            validation_data = (self._table_rows(validation_data[0]), *validation_data[1:])
        train, val = _fit_data(x, y, validation_split, validation_data)
        if sample_weight is not None:
            train = _with_sample_weight(train, x, y, sample_weight)
        train_loader = _data.make_loader(
            train, batch_size=batch_size, shuffle=shuffle, steps=steps_per_epoch
        )
        val_loader = (
            _data.make_loader(val, batch_size=batch_size, steps=validation_steps)
            if val is not None
            else None
        )
        self._fit_sample = _sample_inputs(train_loader)  # lets save() trace without example_input
        # lazy: fit drives the Trainer, which builds on Model
        from ember.train.trainer import Trainer

        trainer_kwargs.setdefault("enable_progress_bar", verbose)
        self.trainer = Trainer(max_epochs=epochs, callbacks=callbacks, **trainer_kwargs)
        if class_weight is None and sample_weight is None:
            return self.trainer.fit(self, train_loader, val_loader)
        # lazy: weighting is part of the training run fit starts, like the Trainer above
        from ember.train.sample_weights import class_weight_tensor, weighted_train_step

        table = class_weight_tensor(class_weight) if class_weight is not None else None
        # An instance attribute shadows the method for this fit only (the Trainer calls it).
        self.train_step = weighted_train_step(self, table, sample_weight is not None)
        try:
            return self.trainer.fit(self, train_loader, val_loader)
        finally:
            del self.train_step

    def evaluate(self, x: Any, y: Any = None, *, batch_size: int = 32) -> dict[str, float]:
        """Loss and compiled metrics on the given data, e.g. {"loss": 0.1, "accuracy": 0.97}."""
        loader = _data.make_loader(self._table_rows(x), y, batch_size=batch_size)
        return _quiet_trainer(self).validate(self, loader)

    def predict(self, x: Any, *, batch_size: int = 32, activation: str | None = None) -> np.ndarray:
        """The model's raw outputs for `x` as a numpy array (logits for a logits head).

        Args:
            x: inputs (numpy arrays, tensors, a Dataset or a DataLoader); for a model with a
                `layers.TableEncoder` also a DataFrame or a dict of columns, raw categories
                included (encoded with the encoder's vocabularies).
            batch_size: samples per batch.
            activation: None (the outputs as they are), "softmax" (over the last dim) or
                "sigmoid" to turn logits into probabilities; see also `predict_proba`.
        """
        if activation not in _PREDICT_ACTIVATIONS:
            raise ValueError(
                f"Unknown activation {activation!r} for predict. Choose one of: None, "
                f"{', '.join(a for a in _PREDICT_ACTIVATIONS if a)}."
            )
        loader = _data.make_loader(self._table_rows(x), batch_size=batch_size)
        out = _quiet_trainer(self).predict(self, loader)
        if activation == "softmax":
            out = out.softmax(dim=-1)
        elif activation == "sigmoid":
            out = out.sigmoid()
        return out.numpy()

    def _table_rows(self, x: Any) -> Any:
        """A DataFrame (or a dict holding every column) for a model with a `TableEncoder`: its
        rows encoded with the encoder's vocabularies, as `TabularData.encode` does. Else `x`."""
        from ember.data.tables import encode_rows, is_table
        from ember.layers.preprocessing import TableEncoder

        if not (is_table(x) or isinstance(x, dict)):
            return x
        encoder = next((m for m in self.modules() if isinstance(m, TableEncoder)), None)
        if encoder is None:
            return x
        names = [c["name"] for c in encoder.columns]
        if isinstance(x, dict) and not set(names) <= set(x):
            return x  # named inputs of a multi-input model, not table columns
        return encode_rows(encoder.columns, x)

    def predict_proba(self, x: Any, *, batch_size: int = 32) -> np.ndarray:
        """Probabilities for `x`: softmax of logits (sigmoid for one output); outputs of a model
        that ends in a sigmoid or softmax (or compiled with `from_logits=False`) as they are."""
        cfg = getattr(self, "_ember_compile", None)
        if cfg is not None:
            logits = cfg.from_logits
        else:
            from ember.losses import infer_from_logits

            logits = infer_from_logits(self)[0]
        out = self.predict(x, batch_size=batch_size)
        if not logits:
            return out
        t = torch.from_numpy(out)
        return (t.sigmoid() if t.ndim == 1 or t.shape[-1] == 1 else t.softmax(dim=-1)).numpy()

    def summary(self, input_shape: Iterable[int] | None = None, print_fn: Any = print) -> str:
        """Print (and return) a table of layers, output shapes and parameter counts."""
        from ember.summary import summary

        text = summary(self, input_shape=tuple(input_shape) if input_shape else self._input_shape())
        if print_fn is not None:
            print_fn(text)
        return text

    def _input_shape(self) -> tuple[int, ...] | None:
        return None

    def save(self, path: str | Path, example_input: Any = None, **kwargs: Any) -> Path:
        """Write a model package (see `ember.save`).

        Without `example_input`, the model is traced on the `Input` layer's shape or on the
        sample of inputs the last `fit` kept (up to 64 rows of its training data, also stored as
        the package's parity sample unless `sample_inputs` is given).
        """
        sample = getattr(self, "_fit_sample", None)  # CPU tensors, as the model is saved on CPU
        if sample is not None:
            kwargs.setdefault("sample_inputs", sample)
        if example_input is None and self._input_shape() is not None:
            example_input = torch.zeros((1, *self._input_shape()))
        if example_input is None:
            example_input = sample
        if example_input is None:
            raise ValueError(
                f"save() needs an example input to trace {type(self).__name__}: call fit() first "
                "(it keeps a sample of its data), pass one batch, model.save(path, "
                "example_input=x[:1]), or start the model with layers.Input(shape)."
            )
        if isinstance(example_input, torch.Tensor):
            example_input = example_input.cpu()
        device = _device_of(self)
        self.cpu()  # trace and store on the CPU, where every export target starts from
        try:
            return _package.save(self, path, example_input=example_input, **kwargs)
        finally:
            self.to(device)

    def get_weights(self) -> list[np.ndarray]:
        """Every weight and buffer (`state_dict` order) as numpy arrays, as Keras' `get_weights`.

        Example:
            >>> other.set_weights(model.get_weights())
        """
        from torch.nn.parameter import is_lazy

        state = self.state_dict()
        if any(is_lazy(t) for t in state.values()):
            raise ValueError(
                f"{type(self).__name__} is not built yet: its lazy layers get their shapes from the "
                "first input. Call the model (or fit) once, or start it with layers.Input(shape)."
            )
        return [t.detach().cpu().numpy().copy() for t in state.values()]

    def set_weights(self, weights: list[Any]) -> None:
        """Load arrays in `get_weights()` order (same count and shapes), as Keras' `set_weights`."""
        state = self.state_dict()
        if len(weights) != len(state):
            raise ValueError(
                f"set_weights expected {len(state)} arrays (get_weights() order), "
                f"received {len(weights)}."
            )
        new = {}
        for (key, old), w in zip(state.items(), weights):
            t = _data.as_tensor(w, key)
            if tuple(t.shape) != tuple(old.shape):
                raise ValueError(
                    f"set_weights: {key} has shape {tuple(old.shape)}, received {tuple(t.shape)}."
                )
            new[key] = t.to(dtype=old.dtype)
        self.load_state_dict(new)


class Sequential(Model):
    """A linear stack of layers, built lazily from the first input (or an `Input` layer).

    Example:
        >>> model = ember.Sequential([
        ...     layers.Input((1, 8, 8)), layers.Conv2D(16, 3, activation="relu"),
        ...     layers.Flatten(), layers.Dense(10)])
        >>> model.summary()
    """

    def __init__(self, layers: Iterable[nn.Module] = (), name: str | None = None) -> None:
        super().__init__()
        self.layers = nn.ModuleList()
        self._names: list[str] = []
        self.name = name
        for layer in layers:
            self.add(layer)

    def add(self, layer: nn.Module) -> None:
        """Append a layer (any nn.Module)."""
        if not isinstance(layer, nn.Module):
            raise TypeError(
                f"Sequential layers must be torch.nn.Module instances. Received: {layer!r}"
            )
        self.layers.append(layer)
        self._names = auto_names(self.layers)
        if self._input_shape() is not None and len(self.layers) > 1:
            self._build()

    def _input_shape(self) -> tuple[int, ...] | None:
        from ember.layers import Input

        if len(self.layers) and isinstance(self.layers[0], Input):
            return tuple(self.layers[0].shape)
        return None

    def _build(self) -> None:
        """Create every lazy weight from the Input layer's shape (without touching the RNG)."""
        with torch.random.fork_rng(devices=[]):
            materialize(self, self.layers[0].example(batch_size=2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(x, np.ndarray):  # model(x_numpy) works as predict(x_numpy) does
            x = _data.as_tensor(x, "x").to(_device_of(self))
        # Errors name the layer and the shapes (check_call raises a ValueError saying which).
        for name, layer in zip(self._names, self.layers):
            x = check_call(name, layer, x)
        return x

    def get_config(self) -> dict:
        """A JSON description to rebuild this model with `from_config` (ember layers only)."""
        layers = []
        for layer in self.layers:
            if not hasattr(layer, "get_config"):
                raise TypeError(
                    f"{type(layer).__name__} has no get_config(): only ember.layers can be "
                    "described; save with a torch.export program instead."
                )
            layers.append({"class": type(layer).__name__, "config": layer.get_config()})
        return {"kind": "sequential", "layers": layers}

    @classmethod
    def from_config(cls, config: dict) -> Sequential:
        """Rebuild a Sequential from `get_config()` output."""
        from ember import layers as _layers

        built = []
        for spec in config["layers"]:
            layer_cls = getattr(_layers, spec["class"], None)
            if layer_cls is None:
                raise ValueError(f"Unknown layer class {spec['class']!r} in the model config.")
            built.append(layer_cls(**spec["config"]))
        return cls(built)


_PREDICT_ACTIVATIONS = (None, "softmax", "sigmoid")


def _fit_data(x: Any, y: Any, validation_split: float | None, validation_data: Any):
    if x is None:
        raise ValueError("fit() needs training data: fit(x, y) or fit(dataset).")
    if validation_split is not None and validation_data is not None:
        raise ValueError("Pass either `validation_split` or `validation_data`, not both.")
    if validation_split is not None:
        if isinstance(x, torch.utils.data.DataLoader) or _data.is_batch_iterable(x):
            raise ValueError(
                "`validation_split` needs arrays, tensors or a Dataset; for a DataLoader or a "
                "generator pass `validation_data`."
            )
        return _data.split_dataset(_data.as_dataset(x, y), validation_split)
    train = x if y is None else _data.as_dataset(x, y)
    if validation_data is None:
        return train, None
    if isinstance(validation_data, (tuple, list)) and len(validation_data) == 2:
        return train, _data.as_dataset(*validation_data)
    return train, validation_data


def _with_sample_weight(train: Any, x: Any, y: Any, sample_weight: Any) -> Any:
    """The training set yielding `(x, (y, w))`; the weights follow a validation split's indices."""
    from ember.train.sample_weights import WeightedDataset  # lazy: see Model.fit

    if y is None:
        raise ValueError(
            "`sample_weight` needs `x` and `y` as arrays or tensors (one weight per sample). "
            "For a Dataset or DataLoader, yield the weight from it and override train_step."
        )
    weights = _data.as_tensor(sample_weight, "sample_weight").float().reshape(-1)
    if len(weights) != len(_data.as_tensor(y, "y")):
        raise ValueError(
            "`sample_weight` must have one weight per sample. "
            f"Received: {len(weights)} weights for {len(_data.as_tensor(y, 'y'))} samples"
        )
    if isinstance(train, torch.utils.data.Subset):  # validation_split kept the first samples
        weights = weights[list(train.indices)]
    return WeightedDataset(train, weights)


def _sample_inputs(loader: Any, rows: int = 64) -> Any:
    """Up to `rows` inputs from the training data, without consuming any of it (None if unknown)."""
    try:
        if isinstance(loader, _data.BatchStream):
            batch = loader.peek()
        elif isinstance(loader, torch.utils.data.DataLoader) and loader.batch_size is not None:
            items = [loader.dataset[i] for i in range(min(rows, len(loader.dataset)))]
            batch = loader.collate_fn(items)
        else:
            return None
        x, _ = steps.split_batch(batch)
    except Exception as exc:  # a sample is a convenience for save(); never fail a fit for it
        log.debug("No sample of the training inputs kept: %s", exc)
        return None
    return _map_tensors(x, lambda t: t[:rows].detach().cpu())


def _map_tensors(x: Any, fn: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return fn(x)
    if isinstance(x, dict):
        return {k: _map_tensors(v, fn) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return tuple(_map_tensors(v, fn) for v in x)
    return x


def _device_of(module: nn.Module) -> torch.device:
    return next((p.device for p in module.parameters()), torch.device("cpu"))


def _quiet_trainer(model: Model):
    from ember.train.trainer import Trainer  # lazy: see Model.fit

    accelerator = getattr(getattr(model, "trainer", None), "device", None)
    return Trainer(
        accelerator=accelerator.type if accelerator is not None else "auto",
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_report=False,
    )


_package.register_architecture("sequential", Sequential.from_config)
