import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

import pytest  # noqa: E402
import cv2  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))
cv2.setNumThreads(int(os.environ.get("VIDTUNE_TEST_THREADS", "2")))  # OpenCV ignores OMP_NUM_THREADS


@pytest.fixture
def tiny_policy():
    """A small random tiny DiT (8 frames, 16 px, patch 1x8x8 → 32 tokens) built in code."""
    from vidtune.models.tiny import TinyConfig, TinyVideoPolicy

    torch.manual_seed(0)
    return TinyVideoPolicy(TinyConfig(frames=4, size=16, patch=(1, 8, 8), hidden=32, depth=2, heads=2,
                                      text_layers=1)).eval()
