"""The verifier's score of a clip does not depend on the process: a clip whose components tie between two shapes
(four frames of a circle, four of a square) is judged in subprocesses with different string-hash seeds. The mode of
such a tie used to be taken over a set, whose order follows the hash seed, so the same clip passed the shape atom in
one process and failed it in the next — which made every run that is scored by the verifier (evaluation, GRPO
rewards) irreproducible across processes."""

import os
import subprocess
import sys

import torch

from vidtune.world.dataset import to_tensor
from vidtune.world.grammar import Scene, caption
from vidtune.world.render import render

JUDGE = ("import sys, torch; from vidtune.rewards.verifier import ShapeWorldVerifier; d = torch.load(sys.argv[1]); "
         "print(float(ShapeWorldVerifier()(d['video'][None], [d['prompt']]).scores[0]))")


def test_a_tied_clip_scores_the_same_in_every_process(tmp_path):
    kw = dict(colour="red", size="large", count=1, motions=("still",), camera="static", pour=False)
    circle, square = (to_tensor(render(Scene(shape=s, **kw), seed=1).video) for s in ("circle", "square"))
    clip = torch.cat([circle[:4], square[4:]])
    path = tmp_path / "tie.pt"
    torch.save({"video": clip, "prompt": caption(Scene(shape="circle", **kw))}, path)
    scores = set()
    for seed in range(6):
        env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONHASHSEED=str(seed))
        res = subprocess.run([sys.executable, "-c", JUDGE, str(path)], capture_output=True, text=True, env=env,
                             timeout=120)
        assert res.returncode == 0, res.stderr
        scores.add(res.stdout.strip())
    assert len(scores) == 1, scores
