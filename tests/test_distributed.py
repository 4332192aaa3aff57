"""Real 2-process DDP runs of train.py on the CPU (gloo): the GAN's two networks stay in sync across ranks,
each rank trains on its own shard, and a run (or each job of a sweep) writes one set of outputs."""

from pathlib import Path

import pytest
import torch

from tests.helpers import load_checkpoint, only_child, run_train

pytestmark = pytest.mark.slow  # 2-process DDP runs

DDP = (
    "experiment=smoke",
    "trainer=ddp",
    "trainer.accelerator=cpu",
    "trainer.devices=2",
    "trainer.deterministic=true",
    "trainer.max_epochs=2",
    "trainer.limit_train_batches=3",
    "data.batch_size=16",
    "callbacks.sample_grid.every_n_steps=2",
    "+callbacks.probe._target_=tests.probes.RankProbe",
)


def probes(run: Path) -> list[dict]:
    return [torch.load(run / "probe" / f"rank{r}.pt", weights_only=True) for r in (0, 1)]


@pytest.fixture(scope="module")
def ddp_run(mnist_root, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("ddp")
    run_train(*DDP, f"data.root={mnist_root}", f"output_root={out}")
    assert [p.name for p in out.iterdir()] == ["runs"]  # no multirun/ or other folders from rank 1
    return only_child(out / "runs")  # one run folder, shared by both ranks


def test_ddp_ranks_end_with_identical_weights_that_both_networks_trained(ddp_run):
    rank0, rank1 = probes(ddp_run)
    assert rank0["world_size"] == rank1["world_size"] == 2
    for name, weight in rank0["end"].items():
        assert torch.equal(weight, rank1["end"][name]), name  # gradients were averaged: same update everywhere
    for network in ("generator", "discriminator"):
        assert any(not torch.equal(w, rank0["start"][n]) for n, w in rank0["end"].items() if n.startswith(network))
    # ... and it is what rank 0 checkpointed
    saved = load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")["state_dict"]
    assert all(torch.equal(saved[name], weight) for name, weight in rank0["end"].items())


def test_ddp_ranks_train_on_distinct_shards_that_change_every_epoch(ddp_run):
    rank0, rank1 = probes(ddp_run)
    for epoch in (0, 1):
        assert len(rank0["indices"][epoch]) == len(rank1["indices"][epoch]) == 3 * 16
        assert not set(rank0["indices"][epoch]) & set(rank1["indices"][epoch])
    assert rank0["indices"][0] != rank0["indices"][1]


def test_ddp_ranks_draw_different_noise(ddp_run):
    rank0, rank1 = probes(ddp_run)
    assert not any(torch.equal(a, b) for a, b in zip(rank0["rng"], rank1["rng"], strict=True))
    # the checkpoint keeps both streams, so that a resumed run continues each rank's own
    states = load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")["rng_states"]
    assert len(states) == 2 and not torch.equal(states[0]["torch"], states[1]["torch"])


def test_ddp_run_writes_one_set_of_checkpoints_grids_and_logs(ddp_run):
    assert {p.name for p in (ddp_run / "checkpoints").iterdir()} == {"epoch_000.ckpt", "epoch_001.ckpt", "last.ckpt"}
    assert load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")["global_step"] == 2 * 6  # 3 steps per epoch
    assert sorted(p.name for p in (ddp_run / "samples").iterdir()) == [
        "step_0000002_epoch_001.png",
        "step_0000003_epoch_001.png",
        "step_0000004_epoch_002.png",
        "step_0000006_epoch_002.png",
    ]
    assert (ddp_run / "progress.gif").is_file() and (ddp_run / "curves.png").is_file()
    assert len(list((ddp_run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert (ddp_run / "train.log").is_file() and (ddp_run / "train_ddp_process_1.log").is_file()
    assert sorted(p.name for p in (ddp_run / "probe").iterdir()) == ["rank0.pt", "rank1.pt"]


def test_ddp_stop_and_resume_equals_training_straight_through(ddp_run, mnist_root, tmp_path):
    # SIGTERM to both ranks during step 4 (the first of epoch 1); they agree to stop at the next logging step
    # (experiment=smoke logs every 5), without waiting for the device at every step. Then resume: as if it had
    # never stopped.
    stopped = run_train(
        *DDP,
        "+callbacks.stop._target_=tests.probes.SignalAt",
        "+callbacks.stop.step=4",
        f"data.root={mnist_root}",
        f"output_root={tmp_path / 'stopped'}",
        check=False,
    )
    assert stopped.returncode == 143, stopped.stderr
    saved = only_child(tmp_path / "stopped" / "runs") / "checkpoints" / "last.ckpt"
    assert load_checkpoint(saved)["global_step"] == 2 * 5
    run_train(*DDP, f"ckpt_path={saved}", f"data.root={mnist_root}", f"output_root={tmp_path / 'resumed'}")
    straight = load_checkpoint(ddp_run / "checkpoints" / "last.ckpt")
    resumed = load_checkpoint(only_child(tmp_path / "resumed" / "runs") / "checkpoints" / "last.ckpt")
    assert straight["global_step"] == resumed["global_step"] == 2 * 6
    for name, tensor in straight["state_dict"].items():
        assert torch.equal(tensor, resumed["state_dict"][name]), name
    for rank in (0, 1):
        assert torch.equal(straight["rng_states"][rank]["torch"], resumed["rng_states"][rank]["torch"])


def test_ddp_multirun_runs_each_job_once_with_its_own_ranks(mnist_root, tmp_path):
    # Lightning starts rank 1 by re-running the command line, which here is a whole sweep.
    run_train(
        "-m",
        "experiment=smoke",
        "trainer=ddp",
        "trainer.accelerator=cpu",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=2",
        "+callbacks.probe._target_=tests.probes.RankProbe",
        "model.lr=1e-4,4e-4",
        f"data.root={mnist_root}",
        f"output_root={tmp_path}",
    )
    assert [p.name for p in tmp_path.iterdir()] == ["multirun"]
    sweep = only_child(tmp_path / "multirun")
    jobs = sorted(p for p in sweep.iterdir() if p.is_dir())
    assert [job.name for job in jobs] == ["0", "1"]
    for job, lr in zip(jobs, (1e-4, 4e-4), strict=True):
        rank0, rank1 = probes(job)
        assert rank0["lr"] == rank1["lr"] == [lr, lr]  # rank 1 ran this job, not the sweep's first
        assert all(torch.equal(w, rank1["end"][n]) for n, w in rank0["end"].items())
        assert (job / "train_ddp_process_1.log").is_file() and (job / "checkpoints" / "last.ckpt").is_file()
    assert "| 1 | 0.0004 | done |" in (sweep / "summary.md").read_text()
