"""What the machine asks of a run (dcgan/machine.py): `trainer.precision=auto` picks bf16 only where the CPU
has bf16 instructions."""

import pytest

from dcgan.machine import BF16_CPU_FLAGS, cpu_flags, pick_precision
from tests.helpers import compose_config


@pytest.mark.parametrize(
    "flags,expected",
    [
        ({"avx512_bf16"}, "bf16-mixed"),
        ({"amx_bf16"}, "bf16-mixed"),
        ({"avx512f", "avx2"}, "32-true"),
        (set(), "32-true"),
    ],
)
def test_default_precision_is_bf16_only_on_cpus_with_bf16_instructions(flags, expected, monkeypatch):
    monkeypatch.setattr("dcgan.machine.cpu_flags", lambda: flags)
    trainer_cfg = compose_config("trainer.accelerator=cpu").trainer
    assert trainer_cfg.precision == "auto"
    pick_precision(trainer_cfg)
    assert trainer_cfg.precision == expected
    explicit = compose_config("trainer.accelerator=cpu", "trainer.precision=32-true").trainer
    pick_precision(explicit)
    assert explicit.precision == "32-true"  # a precision the user gave stays as given


@pytest.mark.slow
def test_smoke_run_picks_its_precision_from_the_cpu(smoke_run):
    expected = "bf16-mixed" if BF16_CPU_FLAGS & cpu_flags() else "32-true"
    assert f"trainer.precision=auto: {expected} on this CPU" in (smoke_run / "train.log").read_text()
