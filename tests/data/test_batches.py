"""ember.data.batches: fit on generators and any iterable of batches (Keras' generator habit)."""

import numpy as np
import pytest

import ember
from ember import layers
from ember.data import BatchStream


def _model():
    model = ember.Sequential([layers.Dense(8, activation="relu"), layers.Dense(3)])
    model.compile("adam", "cross_entropy", ["accuracy"], lr=0.03)
    return model


def _forever(x, y, batch_size=16, seen=None):
    rng = np.random.default_rng(0)
    while True:
        i = rng.integers(0, len(x), batch_size)
        if seen is not None:
            seen.append(1)
        yield x[i], y[i]  # numpy batches, as Keras users write them


def test_fit_on_an_endless_generator_with_steps_per_epoch(blobs, quiet):
    x, y = blobs
    seen = []
    model = _model()
    history = model.fit(_forever(x, y, seen=seen), steps_per_epoch=10, epochs=3, **quiet)
    assert len(history.history["loss"]) == 3
    assert len(seen) == 30  # the peek for building lazy layers consumed no batch
    assert model.evaluate(x, y)["accuracy"] > 0.8


def test_a_finite_generator_trains_one_epoch_and_says_what_to_do_for_more(blobs, quiet):
    x, y = blobs

    def once():
        for i in range(0, len(x), 30):
            yield x[i : i + 30], y[i : i + 30]

    assert len(_model().fit(once(), epochs=1, **quiet).history["loss"]) == 1
    with pytest.raises(ValueError, match=r"ran out after 1 epoch.*steps_per_epoch"):
        _model().fit(once(), epochs=2, **quiet)


def test_a_list_of_batches_is_read_again_every_epoch(blobs, quiet):
    x, y = blobs
    batches = [(x[i : i + 40], y[i : i + 40]) for i in range(0, len(x), 40)]
    history = _model().fit(batches, epochs=2, validation_data=batches, **quiet)
    assert len(history.history["val_loss"]) == 2


def test_validation_generator_with_validation_steps(blobs, quiet):
    x, y = blobs
    history = _model().fit(
        _forever(x, y),
        steps_per_epoch=3,
        validation_data=_forever(x, y),
        validation_steps=2,
        epochs=2,
        **quiet,
    )
    assert len(history.history["val_loss"]) == 2


def test_validation_split_on_a_generator_is_refused(blobs, quiet):
    with pytest.raises(ValueError, match="validation_split.*generator"):
        _model().fit(_forever(*blobs), steps_per_epoch=2, validation_split=0.2, **quiet)


def test_peek_leaves_the_batch_for_the_epoch():
    stream = BatchStream(iter([(np.ones(2), np.zeros(2)), (np.zeros(2), np.ones(2))]))
    first = stream.peek()
    assert [b[0].sum().item() for b in stream] == [first[0].sum().item(), 0.0]
    assert first[0].dtype.is_floating_point and first[0].dtype.itemsize == 4  # float64 -> float32


def test_steps_per_epoch_must_be_positive():
    with pytest.raises(ValueError, match="steps_per_epoch.*Received: steps_per_epoch=0"):
        BatchStream(iter([]), steps=0)


def test_trainer_fit_on_a_raw_generator_loses_no_batch(blobs):
    x, y = blobs
    seen = []
    model = _model()
    trainer = ember.Trainer(
        max_epochs=1,
        logger=False,
        enable_progress_bar=False,
        enable_checkpointing=False,
        enable_report=False,
    )
    gen = ((x[i : i + 20], y[i : i + 20]) for i in range(0, 120, 20) if not seen.append(i))
    trainer.fit(model, gen)
    assert trainer.global_step == 6  # every batch trained on, the first included
