"""How the entry points fail (dcgan/cli.py): Hydra's and OmegaConf's errors as one paragraph that names the key
and the fix, and a console kept to the run. Every entry point's refusals are tests/test_validation.py's."""

import logging
import warnings

import pytest
from hydra import compose, initialize_config_dir

from dcgan.cli import config_error_message
from dcgan.training import DropLightningTip, quiet_lightning
from tests.helpers import CONF


def composing(*overrides: str) -> Exception:
    with pytest.raises(Exception) as raised, initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        compose("config", overrides=list(overrides))
    return raised.value


@pytest.mark.parametrize(
    "override, message",
    [
        (
            "model.lrr=1e-3",
            "model.lrr is not a key of this config (did you mean model.lr?). `python train.py --cfg job` lists every "
            "key. To add a key the config does not have (another Trainer argument, say), write +model.lrr=1e-3.",
        ),
        (
            "trainer=gpuu",
            "trainer=gpuu is not an option of the config group trainer: use one of cpu, ddp, default, gpu (the files "
            "of conf/trainer/).",
        ),
        (
            "model.lr=[",
            "The command line cannot be read (no viable alternative at input '['). Write each setting as key=value, "
            "e.g. model.lr=2e-4; quote a value with spaces or brackets: key='a value'.",
        ),
    ],
)
def test_a_config_hydra_cannot_compose_is_one_paragraph_naming_the_key_and_the_fix(override, message):
    assert config_error_message(composing(override), "train.py") == message


def test_quiet_lightning_adds_its_filters_once_however_often_train_runs():
    quiet_lightning()
    lightning, filters = logging.getLogger("pytorch_lightning.utilities.rank_zero"), list(warnings.filters)
    quiet_lightning()
    assert sum(isinstance(f, DropLightningTip) for f in lightning.filters) == 1 and warnings.filters == filters
