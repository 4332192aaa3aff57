"""The speed switches change how the networks compute, not what they compute; the benchmark runs."""

import json
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch

from bench.throughput import device_summary
from dcgan.data import MNISTDataModule
from tests.helpers import compose_config, dcgan, load_checkpoint, only_child, run_script, run_train
from train import train


def grads(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {name: p.grad.clone() for name, p in module.named_parameters()}


# reduce-overhead adds CUDA graphs on a GPU; on the CPU it compiles as the default mode does.
@pytest.mark.parametrize("channels_last, mode", [(False, True), (True, "reduce-overhead")])
def test_compiled_networks_match_the_uncompiled_ones_forward_and_backward(channels_last, mode):
    torch.manual_seed(0)
    eager = dcgan(g_width=16, d_width=16, channels_last=channels_last, ema_decay=None)
    compiled = dcgan(g_width=16, d_width=16, channels_last=channels_last, ema_decay=None, compile=mode)
    compiled.load_state_dict(eager.state_dict())  # the same keys: compiling in place leaves checkpoints alone
    z, real = torch.randn(32, 100), torch.rand(32, 1, 28, 28) * 2 - 1
    outputs = []
    for model in (eager, compiled):
        model.discriminator.eval()  # no dropout, so that both see the same network
        fake = model.generator(z)  # G in training mode: BatchNorm on batch statistics
        loss = model.discriminator(fake).mean() - model.discriminator(real).mean()
        loss.backward()
        outputs.append((fake, loss, grads(model)))
    (fake_e, loss_e, grads_e), (fake_c, loss_c, grads_c) = outputs
    torch.testing.assert_close(fake_c, fake_e, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-4, atol=1e-5)
    assert grads_c.keys() == grads_e.keys()
    for name in grads_e:
        torch.testing.assert_close(grads_c[name], grads_e[name], rtol=1e-3, atol=1e-5, msg=name)
    assert not torch.equal(grads_e["generator.net.0.weight"], torch.zeros_like(grads_e["generator.net.0.weight"]))


@pytest.mark.parametrize(
    "device",
    [
        "cpu",
        pytest.param(
            "cuda",
            marks=pytest.mark.skipif(
                not torch.cuda.is_available(),
                reason="CUDA graphs need a CUDA device (the cpu case runs the same mode without them)",
            ),
        ),
    ],
)
def test_training_with_reduce_overhead_matches_eager_training(device, mnist_root, tmp_path):
    # Real training steps (D toggled off in the G step, BatchNorm statistics updated inside the compiled code),
    # fp32, no dropout: only the order of floating point operations may differ.
    common = (
        "experiment=smoke",
        f"trainer.accelerator={device}",
        "trainer.precision=32-true",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=4",
        "data.batch_size=16",
        "model.g_width=8",
        "model.d_width=8",
        "callbacks.sample_grid=null",
        "callbacks.quality=null",
        "callbacks.progress_bar=null",
        f"data.root={mnist_root}",
    )
    states = []
    for name, compile in (("eager", "false"), ("graphed", "reduce-overhead")):
        train(compose_config(*common, f"model.compile={compile}", output_dir=str(tmp_path / name)))
        states.append(load_checkpoint(tmp_path / name / "checkpoints" / "last.ckpt")["state_dict"])
    eager, graphed = states
    assert eager.keys() == graphed.keys()
    for name in eager:
        torch.testing.assert_close(graphed[name], eager[name], rtol=1e-4, atol=1e-5, msg=name)


class WeightsAfterEachStep(pl.Callback):
    def __init__(self):
        self.weights = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.weights.append({k: v.detach().clone() for k, v in pl_module.generator.state_dict().items()})


def test_ema_generator_averages_the_weights_and_is_what_samples_come_from(mnist_root):
    probe = WeightsAfterEachStep()
    model = dcgan(g_width=16, d_width=16, ema_decay=0.75, ema_start_step=0)
    trainer = pl.Trainer(
        accelerator="cpu",
        max_steps=2 * 3,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        callbacks=[probe],
    )
    trainer.fit(model, datamodule=MNISTDataModule(mnist_root, batch_size=16))
    first, second, third = (w["net.0.weight"] for w in probe.weights)
    # The first update copies G; each later one moves the average a quarter of the way to G.
    expected = 0.75 * (0.75 * first + 0.25 * second) + 0.25 * third
    torch.testing.assert_close(model.generator_ema.module.net[0].weight, expected)
    assert not torch.allclose(expected, third)
    # The BatchNorm statistics are averaged too, and generate() draws from the average.
    z = torch.randn(8, 100)
    model.generator_ema.module.eval()
    torch.testing.assert_close(model.generate(z), model.generator_ema.module(z))
    assert not torch.allclose(model.generate(z), model.generator.eval()(z))
    assert any(key.startswith("generator_ema.") for key in model.state_dict())  # so checkpoints keep it


def test_throughput_benchmark_quick_mode_prints_its_table_and_writes_json(mnist_root, tmp_path):
    out = tmp_path / "bench.json"
    result = run_script(
        "-m",
        "bench.throughput",
        "--quick",
        "--data-root",
        mnist_root,
        "--json",
        str(out),
        "--variant",
        "plain: model.channels_last=false model.fused_adam=false",
        timeout=600,
    )
    print(result.stdout[-1500:])  # the table, in CI's log
    table = result.stdout[result.stdout.index("images/s") :]
    for name in ("classic", "project", "plain", "data: classic", "data: project"):
        assert f"\n{name} " in table
    rows = {row["name"]: row for row in json.loads(out.read_text())["results"]}
    assert rows["classic"]["vs_classic"] == 1.0 and rows["data: classic"]["vs_classic"] == 1.0
    assert rows["plain"]["overrides"] == "model.channels_last=false model.fused_adam=false"
    assert all(row["images_per_s"] > 0 and row["intervals"] >= 2 for row in rows.values())


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_gpu_benchmark_says_in_one_line_that_there_is_no_gpu():
    result = run_script("-m", "bench.throughput", "--device", "cuda", check=False)
    assert result.returncode == 1 and result.stdout == ""
    assert "finds no CUDA device" in result.stderr and result.stderr.strip().count("\n") == 0


def test_gpu_profile_summary_counts_busy_time_once_launches_and_waits():
    def event(name, device, activity="cuda_runtime", start=0, end=0):  # as torch.profiler's kineto results hold them
        return SimpleNamespace(
            name=lambda: name,
            device_type=lambda: device,
            activity_type=lambda: activity,
            start_ns=lambda: start,
            end_ns=lambda: end,
        )

    cpu, cuda = torch.autograd.DeviceType.CPU, torch.autograd.DeviceType.CUDA
    events = [
        event("gemm", cuda, "kernel", 0, 2_000_000),
        event("copy", cuda, "gpu_memcpy", 1_000_000, 3_000_000),
        event("gemm", cuda, "kernel", 5_000_000, 6_000_000),
        event("note", cuda, "gpu_user_annotation", 0, 9_000_000),
        event("cudaLaunchKernel", cpu),
        event("cudaGraphLaunch", cpu),
        event("aten::mm", cpu, "cpu_op"),
        event("cudaStreamSynchronize", cpu),
        event("cudaDeviceSynchronize", cpu),  # the benchmark's own, not counted
    ]
    summary = device_summary(events, steps=2)
    assert summary == {"compute_ms": 2.0, "kernels": 1.5, "launches": 1.0, "waits": 0.5}


def test_cpu_fast_preset_trains_a_conditional_gan_in_bf16(mnist_root, classifier_path, tmp_path):
    cfg = compose_config("experiment=cpu_fast")
    assert (cfg.trainer.accelerator, cfg.trainer.precision, cfg.model.num_classes) == ("cpu", "bf16-mixed", 10)
    assert cfg.trainer.max_time  # a wall-clock cap, whatever the machine
    # With an EMA generator too, to check that it trains and is saved under bf16.
    run_train(
        "experiment=cpu_fast",
        "model.ema_decay=0.9",
        "trainer.max_epochs=1",
        "trainer.limit_train_batches=6",
        "callbacks.quality.num_samples=500",
        "callbacks.sample_grid.every_n_steps=3",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        f"output_root={tmp_path}",
    )
    run = only_child(tmp_path / "runs")
    checkpoint = load_checkpoint(run / "checkpoints" / "last.ckpt")
    assert checkpoint["hyper_parameters"]["ema_decay"] == 0.9
    ema = checkpoint["state_dict"]["generator_ema.module.net.0.weight"]
    assert not torch.equal(ema, checkpoint["state_dict"]["generator.net.0.weight"])
    assert ema.dtype == torch.float32  # bf16 autocast computes in bf16 but keeps the weights in fp32
    metrics = json.loads((run / "final_metrics.json").read_text())
    assert {"metric/fid", "metric/label_accuracy", "metric/min_digit_share"} <= metrics.keys()
    assert len(list((run / "samples").glob("step_*.png"))) == 2


def test_a_run_with_an_average_resumes_without_one_and_back(smoke_run, mnist_root, classifier_path, tmp_path):
    common = (
        "experiment=smoke",
        f"data.root={mnist_root}",
        f"classifier_path={classifier_path}",
        "callbacks.quality=null",
    )
    averaged = smoke_run / "checkpoints" / "last.ckpt"  # the default keeps an average of G
    assert any(key.startswith("generator_ema.") for key in load_checkpoint(averaged)["state_dict"])
    run_train(
        *common,
        f"ckpt_path={averaged}",
        "model.ema_decay=null",
        "trainer.max_epochs=3",
        f"output_root={tmp_path / 'plain'}",
    )
    plain = only_child(tmp_path / "plain" / "runs") / "checkpoints" / "last.ckpt"
    assert not any(key.startswith("generator_ema.") for key in load_checkpoint(plain)["state_dict"])
    run_train(
        *common,
        f"ckpt_path={plain}",
        "model.ema_decay=0.9",
        "model.ema_start_step=0",
        "trainer.max_epochs=4",
        f"output_root={tmp_path / 'ema'}",
    )
    state = load_checkpoint(only_child(tmp_path / "ema" / "runs") / "checkpoints" / "last.ckpt")["state_dict"]
    assert state["generator_ema.n_averaged"] == 10  # started anew at the resume, then 10 steps averaged
