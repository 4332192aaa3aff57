"""evaluate.py: the quality metric for a checkpoint of a real (short) training run, for real digits, and a
conditional GAN's label accuracy."""

import json

from tests.helpers import last_ckpt, run_script


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
