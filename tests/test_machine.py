"""What the machine asks of a run (dcgan/machine.py): `trainer.precision=auto`, and so `trainer=cpu`, picks bf16
autocast only where the CPU has bf16 instructions and bf16 measured faster than fp32 there; the measurement is
made once per CPU and setting, and kept."""

import logging
import math

import pytest
import torch

from dcgan import machine
from dcgan.machine import BF16_CPU_FLAGS, cpu_bf16_speedup, cpu_flags, cpu_kind, measure_bf16_speedup, pick_precision
from tests.helpers import compose_config


@pytest.fixture
def measured(monkeypatch) -> list[float]:
    """The bf16 measurement stands in for the CPU's: each call pops the next speedup of this list."""
    speedups = []
    monkeypatch.setattr(machine, "measure_bf16_speedup", lambda: speedups.pop(0))
    return speedups


@pytest.mark.parametrize(
    "flags, speedup, expected",
    [
        (set(), None, "32-true"),  # AVX2 or AVX-512 without bf16: emulated, not even measured
        ({"avx512f", "avx2"}, None, "32-true"),
        ({"avx512_bf16"}, 1.6, "bf16-mixed"),
        ({"amx_bf16"}, 2.5, "bf16-mixed"),
        ({"avx512_bf16"}, 0.06, "32-true"),  # the flag, but oneDNN held to AVX2 (ONEDNN_MAX_CPU_ISA)
        ({"avx512_bf16"}, 1.05, "32-true"),  # a tie: fp32, which does not round
    ],
)
def test_trainer_cpu_resolves_to_the_precision_this_cpu_computes_fastest(
    flags, speedup, expected, measured, monkeypatch, tmp_path, caplog
):
    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    measured.extend([] if speedup is None else [speedup])
    trainer_cfg = compose_config("trainer=cpu").trainer
    assert trainer_cfg.precision == "auto"
    with caplog.at_level(logging.INFO, logger="dcgan.machine"):
        pick_precision(trainer_cfg, tmp_path)
    assert trainer_cfg.precision == expected
    assert not measured  # measured exactly when the flags allow bf16
    (line,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("trainer.precision=auto")]
    why = f"measured {speedup:.2f}x fp32's speed" if speedup else "no bf16 instructions"
    assert line.startswith(f"trainer.precision=auto: {expected} on this CPU ({cpu_kind()}): ") and why in line


def test_a_precision_the_user_gave_stays_and_bf16_where_it_is_emulated_is_warned_about(monkeypatch, tmp_path, caplog):
    monkeypatch.setattr(machine, "cpu_flags", lambda: {"avx2"})
    for precision in ("32-true", "bf16-mixed"):
        trainer_cfg = compose_config("trainer=cpu", f"trainer.precision={precision}").trainer
        pick_precision(trainer_cfg, tmp_path)
        assert trainer_cfg.precision == precision
    (warning,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith("trainer.precision=bf16-mixed on a CPU without bf16 instructions")
    assert "trainer.precision=auto picks the fastest precision" in warning


def test_the_measurement_is_made_once_per_setting_and_kept(measured, monkeypatch, tmp_path):
    measured.extend([1.6, 0.06])
    assert cpu_bf16_speedup(tmp_path) == 1.6
    assert cpu_bf16_speedup(tmp_path) == 1.6  # kept: not measured again
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")  # another setting is another answer
    assert cpu_bf16_speedup(tmp_path) == 0.06
    monkeypatch.delenv("ONEDNN_MAX_CPU_ISA")
    assert cpu_bf16_speedup(tmp_path) == 1.6 and not measured
    assert len((tmp_path / "cpu_bf16_speedup.json").read_text().splitlines()) == 4  # { two keys }


def test_a_cache_that_cannot_be_written_costs_a_measurement_not_the_run(measured, tmp_path, caplog):
    measured.extend([1.6, 1.7])
    (tmp_path / "a-file").write_text("")
    assert cpu_bf16_speedup(tmp_path / "a-file") == 1.6
    assert cpu_bf16_speedup(tmp_path / "a-file") == 1.7
    assert "The bf16 measurement could not be kept" in caplog.text


def test_the_real_measurement_gives_a_ratio_and_leaves_the_random_stream_alone():
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    speedup = measure_bf16_speedup()
    assert math.isfinite(speedup) and speedup > 0
    assert torch.equal(torch.rand(3), expected)


@pytest.mark.slow
def test_smoke_run_picks_its_precision_from_the_cpu(smoke_run):
    config = compose_config()
    fast = BF16_CPU_FLAGS & cpu_flags() and cpu_bf16_speedup(config.data.cache_dir) >= machine.BF16_MIN_SPEEDUP
    expected = "bf16-mixed" if fast else "32-true"
    assert f"trainer.precision=auto: {expected} on this CPU" in (smoke_run / "train.log").read_text()


@pytest.mark.parametrize(
    "flags, kind",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "AVX-512 BF16"),
        ({"avx2", "avx512f", "amx_bf16"}, "AMX BF16"),
        ({"avx2", "avx512f"}, "AVX-512 without BF16"),
        ({"avx2", "fma"}, "AVX2 only"),
        (set(), "no AVX2"),
    ],
)
def test_a_figure_names_its_cpus_kind(flags, kind, monkeypatch):
    monkeypatch.setattr(machine, "cpu_flags", lambda: flags)
    assert cpu_kind() == f"{machine.cpu_model()}, {kind}"
