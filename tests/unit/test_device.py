"""run.device: a typed key, and a clear error when CUDA is asked for on a machine without it."""

import pytest
import torch

from vidtune.config import load_recipe
from vidtune.errors import ConfigError, VidtuneError
from vidtune.models.factory import resolve_device


def test_device_key_defaults_to_cpu_and_rejects_unknown_devices():
    assert load_recipe(None).run.device == "cpu"
    assert load_recipe(None, ["run.device=cuda:1"]).run.device == "cuda:1"
    with pytest.raises(ConfigError, match="'run.device'"):
        load_recipe(None, ["run.device=gpu"])
    assert resolve_device("cpu") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("name", ["cuda", "cuda:1"])
def test_cuda_without_cuda_is_one_clear_error(name):
    with pytest.raises(VidtuneError, match=rf"run.device={name}: CUDA is not available on this machine .*"
                                           "use run.device=cpu"):
        resolve_device(name)
