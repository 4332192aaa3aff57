"""The failures a user can act on survive the trip to a sweep launcher's parent process."""

import pickle
import signal
from pathlib import Path

import pytorch_lightning as pl

from dcgan.errors import UserFacingError
from dcgan.guards import NonFiniteLossError
from dcgan.resume import TrainingStopped


def test_failures_pickle_with_their_message_and_exit_code():
    diverged = NonFiniteLossError("loss/g is nan at step 2", pl.Trainer(logger=False, enable_checkpointing=False))
    stopped = TrainingStopped(signal.SIGTERM, 7, Path("run/checkpoints/last.ckpt"))
    for err in (diverged, stopped):
        again = pickle.loads(pickle.dumps(err))
        assert type(again) is type(err) and isinstance(again, UserFacingError)
        assert str(again) == str(err) and again.exit_code == err.exit_code
    assert stopped.exit_code == 143 and "loss/g is nan at step 2" in str(diverged)
