"""LoopState: the fit loop's position and epoch sums, owned by the Trainer."""

import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import ember
from ember.train.loop_state import LoopState, prepare_loader

CPU = torch.device("cpu")


def _loader(n=40, batch_size=8):
    data = TensorDataset(torch.randn(n, 4), torch.randint(0, 2, (n,)))
    return prepare_loader(
        DataLoader(data, batch_size=batch_size, shuffle=True), shuffle=True, seed=3
    )


def test_begin_epoch_counts_batches_and_applies_the_limit():
    state = LoopState()
    state.begin_epoch(_loader(), seed=3, limit=None, device=CPU)
    assert state.num_batches == 5 and state.loss_sum == 0.0 and state.samples == 0
    state.begin_epoch(_loader(), seed=3, limit=2, device=CPU)
    assert state.num_batches == 2


def test_a_resumed_epoch_keeps_its_sums_and_skips_the_batches_done():
    state = LoopState()
    state.batch_in_epoch, state.samples, state.loss_sum = 3, 24, 12.0
    loader = _loader()
    state.begin_epoch(loader, seed=3, limit=None, device=CPU)
    assert (state.samples, state.loss_sum) == (24, 12.0)
    assert state.num_batches == 5 and len(list(loader)) == 2  # 3 of 5 batches already done


def test_end_epoch_and_reset():
    state = LoopState()
    state.epoch, state.batch_in_epoch, state.global_step = 2, 4, 30
    state.end_epoch()
    assert (state.epoch, state.batch_in_epoch, state.global_step) == (3, 0, 30)
    state.reset()
    assert (state.epoch, state.global_step, state.should_stop) == (0, 0, False)


def test_the_trainer_reads_and_writes_its_position_in_its_loop_state():
    trainer = ember.Trainer(max_epochs=1, logger=False, enable_progress_bar=False)
    trainer.should_stop = True
    trainer.current_epoch = 4
    assert trainer.loop.should_stop is True and trainer.loop.epoch == 4
    trainer.loop.global_step = 7
    assert trainer.global_step == 7


def test_fit_counts_steps_and_samples_in_the_loop_state():
    net = ember.compile(torch.nn.Linear(4, 2), "sgd", "cross_entropy")
    trainer = ember.Trainer(
        max_epochs=2, logger=False, enable_progress_bar=False, enable_checkpointing=False
    )
    history = trainer.fit(net, _loader())
    assert (trainer.loop.epoch, trainer.loop.global_step, trainer.loop.samples) == (2, 10, 40)
    assert history.history["loss"][-1] == pytest.approx(trainer.loop.loss_sum / 40)


def test_the_checkpoint_format_is_defined_once():
    from ember.train import checkpoint_files, resume

    assert resume.FORMAT is checkpoint_files.FORMAT
    assert not hasattr(__import__("ember.train.loop_state").train.loop_state, "FORMAT")
