"""What a run reports (dcgan/reports.py): TensorBoard's scalars, grids and HPARAMS row, the progress GIF and the
curves, and both pictures rebuilt for any run folder."""

import shutil
import subprocess
import sys

import pytest
from PIL import Image
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData

from tests.helpers import SMOKE_STEPS, compose_config, events, run_script

pytestmark = pytest.mark.slow  # a real run of train.py, with the metric

SCALARS = {"loss/d", "loss/g", "d/real", "d/fake"}


def test_smoke_run_logs_the_four_scalars_the_grids_and_hparams_to_tensorboard(smoke_run):
    acc = events(smoke_run)
    assert SCALARS <= set(acc.Tags()["scalars"])
    for tag in SCALARS:
        steps = [e.step for e in acc.Scalars(tag)]
        assert steps and max(steps) <= SMOKE_STEPS  # steps count training steps (batches)
    d_real = [e.value for e in acc.Scalars("d/real")]
    assert all(0 < v < 1 for v in d_real)
    assert [e.step for e in acc.Images("samples")] == [5, 10, 15, 20]
    # the quality metric, once per epoch
    assert len(acc.Scalars("metric/fid")) == 2 and all(e.value > 0 for e in acc.Scalars("metric/fid"))
    assert {f"digits/{d}" for d in range(10)} <= set(acc.Tags()["scalars"])
    content = acc.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    hparams = HParamsPluginData.FromString(content).session_start_info.hparams
    composed = compose_config("experiment=smoke")  # what the run was given
    assert hparams["model.lr"].number_value == pytest.approx(composed.model.lr)
    assert hparams["data.batch_size"].number_value == composed.data.batch_size
    assert "model._target_" not in hparams and "data.root" not in hparams  # the same in every run, or a path
    experiment = HParamsPluginData.FromString(acc.PluginTagToContent("hparams")["_hparams_/experiment"]).experiment
    metrics = {"metric/fid", "metric/kid", "metric/precision", "metric/recall", "metric/min_digit_share"}
    assert {m.name.tag for m in experiment.metric_infos} == SCALARS | metrics


def test_run_folder_gets_its_gif_and_curves(smoke_run):
    grids = sorted((smoke_run / "samples").glob("*.png"))
    with Image.open(smoke_run / "progress.gif") as gif:
        assert gif.n_frames == len(grids) == 4
        assert gif.size == (8 * 30 + 2, 8 * 30 + 2 + 14)  # the grid and a label strip
    with Image.open(smoke_run / "curves.png") as curves:
        assert curves.width > 800


def test_reports_rebuild_from_any_run_folder(smoke_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(smoke_run, copy, ignore=shutil.ignore_patterns("*.gif", "curves.png", "checkpoints"))
    result = run_script("-m", "dcgan.reports", str(copy), "--max-frames", "3")
    assert "progress.gif" in result.stdout and "curves.png" in result.stdout
    with Image.open(copy / "progress.gif") as gif:
        assert gif.n_frames == 3
    assert (copy / "curves.png").stat().st_size > 10_000


def test_the_reports_are_a_library_that_does_not_import_the_config_checks():
    """Training imports the reports at a run's end; only `python -m dcgan.reports` needs the command-line layer."""
    code = "import sys, dcgan.reports; print(sorted(m for m in sys.modules if m.startswith('dcgan.')))"
    imported = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "dcgan.reports" in imported and not {"dcgan.cli", "dcgan.schema", "dcgan.module"} & set(eval(imported))
