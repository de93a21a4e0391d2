"""--device and --dtype: what each name selects, with and without a GPU, and the one-line errors.

The CUDA cases patch torch's view of the machine, so the selection logic is covered on CPU-only hosts;
tests/gpu/ runs the real thing where a GPU is present.
"""

import pytest
import torch

from hepta.devices import resolve_device, resolve_dtype
from hepta.errors import HeptaError


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)


@pytest.fixture
def no_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)


def test_auto_takes_the_cpu_without_a_gpu(no_gpu):
    assert resolve_device("auto") == torch.device("cpu")
    assert resolve_device("cpu") == torch.device("cpu")


def test_auto_and_cuda_take_the_current_gpu(two_gpus):
    assert resolve_device("auto") == torch.device("cuda", 0)
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert resolve_device("cuda:1") == torch.device("cuda", 1)
    assert resolve_device("cpu") == torch.device("cpu")  # asked for, even with GPUs there


def test_cuda_without_a_gpu_names_the_fix(no_gpu):
    with pytest.raises(HeptaError, match="torch sees no CUDA GPU.*pass --device cpu"):
        resolve_device("cuda")


def test_a_gpu_index_past_the_last_is_refused(two_gpus):
    with pytest.raises(HeptaError, match="sees 2 CUDA GPU"):
        resolve_device("cuda:2")


@pytest.mark.parametrize("name", ["tpu", "gpu0", "cuda:x"])
def test_unknown_devices_are_refused(name):
    with pytest.raises(HeptaError, match="auto, cpu, cuda or cuda:N"):
        resolve_device(name)


def test_dtypes():
    assert resolve_dtype("auto") is None and resolve_dtype(None) is None
    assert resolve_dtype("bfloat16") is torch.bfloat16
    with pytest.raises(HeptaError, match="pass auto, float32, bfloat16, float16"):
        resolve_dtype("int8")
