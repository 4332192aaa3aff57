"""evaluate.py: the quality metric for checkpoints of real (short) training runs, for real digits, several runs
at once, and a conditional GAN's label accuracy."""

import json
import shutil

import pytest

from tests.helpers import last_ckpt, run_script

pytestmark = pytest.mark.slow  # the metric's classifier


def test_evaluate_reports_the_metric_for_a_checkpoint_and_for_real_data(
    smoke_run, mnist_root, classifier_path, tmp_path
):
    common = [f"data.root={mnist_root}", f"classifier_path={classifier_path}", "num_samples=2000"]
    real = run_script("evaluate.py", "real=true", *common, f"output={tmp_path / 'real.json'}")
    assert "Frechet distance" in real.stdout and "digit shares" in real.stdout
    fake = run_script("evaluate.py", f"ckpt_path={last_ckpt(smoke_run)}", *common, f"output={tmp_path / 'fake.json'}")
    floor, scores = (json.loads((tmp_path / f"{name}.json").read_text()) for name in ("real", "fake"))
    assert floor["fid"] < 5 and scores["fid"] > 20  # 20 tiny steps are far from real digits
    assert str(last_ckpt(smoke_run)) in fake.stdout


def test_cgan_metric_includes_label_accuracy(cgan_smoke_run, mnist_root, classifier_path, tmp_path):
    run_script(
        "evaluate.py",
        f"ckpt_path={last_ckpt(cgan_smoke_run)}",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        "num_samples=1000",
        f"output={tmp_path / 'm.json'}",
    )
    assert 0 <= json.loads((tmp_path / "m.json").read_text())["label_accuracy"] <= 1


def test_several_runs_or_a_sweeps_folder_get_one_table_of_means_and_spreads(
    tiny_run, smoke_run, mnist_root, classifier_path, tmp_path
):
    sweep = tmp_path / "multirun" / "2026-11-29_12-00-00"
    for job, run in enumerate((tiny_run, smoke_run)):  # as a sweep lays its jobs out
        shutil.copytree(run / "checkpoints", sweep / str(job) / "checkpoints")
    common = [f"data.root={mnist_root}", f"classifier_path={classifier_path}", "num_samples=500"]
    result = run_script("evaluate.py", f"ckpt_path={sweep}", *common, f"output={tmp_path / 'sweep.json'}")
    report = json.loads((tmp_path / "sweep.json").read_text())
    assert list(report["runs"]) == [str(sweep / job / "checkpoints" / "last.ckpt") for job in ("0", "1")]
    fids = [scores["fid"] for scores in report["runs"].values()]
    assert report["mean"]["fid"] == pytest.approx(sum(fids) / 2) and report["std"]["fid"] > 0
    assert report["real_digits"]["fid"] < min(fids)  # the floor, beside them
    fid_row = next(line for line in result.stdout.splitlines() if line.startswith("Frechet distance"))
    assert f"{report['mean']['fid']:.2f} +- {report['std']['fid']:.2f}" in fid_row
    listed = [f"ckpt_path=[{sweep / '0' / 'checkpoints' / 'last.ckpt'},{sweep / '1' / 'checkpoints' / 'last.ckpt'}]"]
    again = run_script("evaluate.py", *listed, *common)
    assert again.stdout.splitlines()[1:] == result.stdout.splitlines()[1:]  # a list of the same checkpoints
