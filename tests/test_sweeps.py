"""Sweeps (`train.py -m`, dcgan/sweeps.py): one numbered folder per job, parallel jobs (joblib), submitit, an
Optuna search over the learning rates, and the summary table every sweep leaves in its folder."""

import csv
import json

import pytest
import yaml
from hydra import compose, initialize_config_dir

from tests.helpers import CONF, load_checkpoint, only_child, run_train

TINY = (
    "experiment=smoke",
    "trainer.max_epochs=1",
    "trainer.limit_train_batches=2",
    "trainer.log_every_n_steps=2",  # the losses are logged at logging steps only, and the summary lists them
    "model.g_width=8",
    "model.d_width=8",
    "callbacks.sample_grid.every_n_steps=null",
)


# Optuna over the learning rate, its 2 trials launched at once by joblib.
PARALLEL_SEARCH = (
    "hydra/sweeper=lr_search",
    "hydra/launcher=joblib",
    "hydra.sweeper.n_trials=2",
    "hydra.sweeper.n_jobs=2",
)
# Through submitit: job 0 diverges at step 2 (it fails alone; Hydra reports the sweep as failed at the end), job 1 trains.
ONE_FAILS = (
    "hydra/launcher=submitit_local",
    "+callbacks.diverge._target_=tests.probes.DivergeAt",
    "+callbacks.diverge.step=2,1000",
)


def run_sweep(mnist_root, tmp_path, *overrides: str, check: bool = True):
    """`python train.py -m <overrides> <the TINY runs>`, writing below tmp_path; its result."""
    return run_train("-m", *overrides, *TINY, f"data.root={mnist_root}", f"output_root={tmp_path}", check=check)


def jobs(sweep):
    return sorted((p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith(".")), key=lambda p: int(p.name))


@pytest.mark.slow
def test_multirun_gives_one_numbered_folder_per_job_and_lists_its_values(mnist_root, classifier_path, tmp_path):
    run_train(
        "-m",
        "experiment=smoke",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "model.lr=1e-4,4e-4",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        f"output_root={tmp_path}",
    )
    sweep = only_child(tmp_path / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert [job.name for job in jobs] == ["0", "1"]
    rows = [
        line
        for line in (sweep / "summary.md").read_text().splitlines()
        if line.startswith("| ") and "model.lr" not in line
    ]
    assert {row.split(" | ")[1] for row in rows if row.split(" | ")[0] in ("| 0", "| 1")} == {"0.0001", "0.0004"}
    for job, lr in zip(jobs, (1e-4, 4e-4), strict=True):
        ckpt = load_checkpoint(job / "checkpoints" / "last.ckpt")
        assert [state["param_groups"][0]["lr"] for state in ckpt["optimizer_states"]] == [lr, lr]
        assert (job / "tensorboard").is_dir() and list((job / "samples").glob("*.png"))


@pytest.mark.slow
def test_optuna_searches_the_learning_rate_in_parallel_jobs_and_minimises_what_train_py_returns(mnist_root, tmp_path):
    result = run_sweep(mnist_root, tmp_path, *PARALLEL_SEARCH)
    assert "Joblib.Parallel(n_jobs=-1" in result.stdout + result.stderr  # both trials launched at once
    sweep = only_child(tmp_path / "multirun")
    found = []
    for job in jobs(sweep):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert 1e-5 <= config["model"]["lr"] <= 2e-3 and config["model"]["betas"] in ([0.0, 0.99], [0.5, 0.999])
        metrics = json.loads((job / "final_metrics.json").read_text())
        assert metrics["objective"] == metrics["metric/fid"]  # the quality metric, measured at the epoch's end
        found.append(metrics["objective"])
    assert len(found) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == min(found)  # Optuna saw exactly what train.py returned

    with open(sweep / "summary.csv") as f:
        rows = list(csv.DictReader(f))
    assert [row["status"] for row in rows] == ["done", "done"]
    assert {"model.lr", "objective", "loss/d", "loss/g", "d/real", "d/fake", "metric/recall"} <= set(rows[0])
    # best first, in the table and in the figure
    assert [float(row["objective"]) for row in rows] == sorted(float(f"{v:.6g}") for v in found)
    assert "| model.lr |" in (sweep / "summary.md").read_text()  # (and model.betas, when the trials drew two)
    assert (sweep / "summary.png").stat().st_size > 10_000


@pytest.mark.slow
def test_submitit_jobs_run_and_the_summary_shows_the_one_that_failed(mnist_root, tmp_path):
    result = run_sweep(mnist_root, tmp_path, *ONE_FAILS, check=False)
    assert (
        result.returncode != 0
        and "loss/g or its gradients were NaN or Inf in 1 step between step 1 and step 2"
        in result.stderr + result.stdout
    )
    sweep = only_child(tmp_path / "multirun")
    assert (sweep / ".submitit").is_dir()  # the jobs went through submitit
    summary = (sweep / "summary.md").read_text()
    assert "| 0 | 2 | failed or unfinished |" in summary and "| 1 | 1000 | done |" in summary
    assert "Best: job 1 " in summary


def test_slurm_launcher_asks_for_a_gpu_and_a_task_per_device():
    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = compose(
            "config", overrides=["hydra/launcher=slurm", "trainer=ddp", "trainer.devices=4"], return_hydra_config=True
        )
    launcher = cfg.hydra.launcher
    assert launcher._target_ == "hydra_plugins.hydra_submitit_launcher.submitit_launcher.SlurmLauncher"
    assert (launcher.gpus_per_node, launcher.tasks_per_node, launcher.nodes) == (4, 4, 1)
    assert launcher.partition and launcher.timeout_min > 0


@pytest.mark.slow
def test_recipe_search_trains_each_trial_for_the_same_wall_clock_budget(mnist_root, tmp_path):
    run_train(
        "-m",
        "hydra/sweeper=recipe_search",
        "hydra.sweeper.n_trials=2",
        "trainer.max_time=00:00:00:08",
        "callbacks.quality.num_samples=500",
        "callbacks.sample_grid.every_n_steps=null",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    sweep = only_child(tmp_path / "multirun")
    searched = []
    for job in jobs(sweep):
        config = yaml.safe_load((job / ".hydra" / "config.yaml").read_text())
        assert config["trainer"]["precision"] == "auto" and config["trainer"]["max_time"] == "00:00:00:08"
        model = config["model"]
        assert model["g_width"] in (32, 64, 96) and model["num_clusters"] in (None, 100, 200)
        assert model["betas"] in ([0.5, 0.999], [0.0, 0.99], [0.5, 0.9])  # quoted choices arrive as lists
        assert model["label_smoothing"] in (None, [0.8, 1.0], [0.9, 1.0])
        metrics = json.loads((job / "final_metrics.json").read_text())
        assert metrics["objective"] == metrics["metric/fid"]  # scored where the budget ran out
        searched.append(model["lr"])
    assert len(set(searched)) == 2
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert set(best["best_params"]) >= {"model.g_width", "model.num_clusters", "model.ema_decay", "data.batch_size"}
