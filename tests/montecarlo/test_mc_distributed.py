"""Scale-out: two processes under torchrun return bitwise the single-process result."""

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed as dist

import lossfn
from lossfn import montecarlo

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = """
import sys, torch, lossfn
from lossfn import montecarlo
study = montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Contaminated(0.1, 3.0),
                       m=7, reps=2_500, seed=9, block_size=300, chunk_size=700)
line = montecarlo.run_regression({"ols": lambda x, y: (
    (x - x.mean(-1, keepdim=True)) * y).sum(-1) / ((x - x.mean(-1, keepdim=True)) ** 2).sum(-1)},
    lossfn.Laplace(1.0), torch.linspace(0, 1, 6, dtype=torch.float64), reps=1_000, block_size=128)
import torch.distributed as dist
torch.save({"study": tuple(study.moments), "line": tuple(line.moments),
            "world": dist.get_world_size()}, sys.argv[1] + f"/rank{dist.get_rank()}.pt")
"""


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not (dist.is_available() and dist.is_gloo_available()), reason="needs gloo")
def test_torchrun_two_processes_bitwise_equal_to_one(tmp_path):
    script = tmp_path / "study.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    done = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
         "--master_addr=127.0.0.1", f"--master_port={free_port()}", str(script), str(tmp_path)],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]

    study = montecarlo.run({"mean": "mean", "median": "median"}, lossfn.Contaminated(0.1, 3.0),
                           m=7, reps=2_500, seed=9, block_size=300, chunk_size=10**6)
    line = montecarlo.run_regression({"ols": lambda x, y: (
        (x - x.mean(-1, keepdim=True)) * y).sum(-1) / ((x - x.mean(-1, keepdim=True)) ** 2).sum(-1)},
        lossfn.Laplace(1.0), torch.linspace(0, 1, 6, dtype=torch.float64), reps=1_000,
        block_size=128)
    for rank in (0, 1):
        got = torch.load(tmp_path / f"rank{rank}.pt")
        assert got["world"] == 2
        assert all(torch.equal(a, b) for a, b in zip(got["study"], study.moments))
        assert all(torch.equal(a, b) for a, b in zip(got["line"], line.moments))
