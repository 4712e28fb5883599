"""Several nodes on one machine: torchrun with two node ranks, and a simulated SLURM allocation running the
shipped sbatch script (configs/slurm/sweep.sbatch) with stand-in ``srun`` and ``scontrol``, preempted with
SIGUSR1 and requeued. Gloo on the CPU; each process is a "node" of one device."""

import json
import os
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from torchvision.io import ImageReadMode, decode_image

from clip_inversion.rundir import read_manifest, read_records

ROOT = Path(__file__).parents[1]
SBATCH = ROOT / "configs" / "slurm" / "sweep.sbatch"
PROMPTS = [f"a {c} {s}" for c in ("red", "blue", "green", "yellow") for s in ("star", "circle", "cross")]
# Tiny inversions: the point is who inverts what, and what is on disk afterwards.
TINY = ["--model.copies=1", "--model.init_size=16", "--data.batch_size=3", "--trainer.enable_progress_bar=false"]
TINY += ["--trainer.accelerator=cpu"]
LAUNCHED = ("MASTER_ADDR", "MASTER_PORT", "NODE_RANK", "LOCAL_RANK", "GLOBAL_RANK", "RANK", "WORLD_SIZE", "GROUP_RANK")

FAKE_SRUN = """#!{python}
# srun for one machine: starts SLURM_NNODES x SLURM_NTASKS_PER_NODE tasks with the variables srun sets, passes
# SIGUSR1 and SIGTERM on to them (as SLURM signals every task), exits with the worst status.
import os, signal, subprocess, sys
nodes, per_node = int(os.environ["SLURM_NNODES"]), int(os.environ["SLURM_NTASKS_PER_NODE"])
tasks = [
    subprocess.Popen(sys.argv[1:], env=os.environ | {{
        "SLURM_NTASKS": str(nodes * per_node), "SLURM_PROCID": str(node * per_node + local),
        "SLURM_LOCALID": str(local), "SLURM_NODEID": str(node), "SLURM_STEP_ID": "0"}})
    for node in range(nodes) for local in range(per_node)
]
for sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(sig, lambda s, f: [t.send_signal(s) for t in tasks])
open(os.environ["FAKE_SRUN_PID"], "w").write(str(os.getpid()))
sys.exit(max(t.wait() for t in tasks))
"""


def free_port(low: int = 0, high: int = 0) -> int:
    """A port nobody listens on: any (``low=0``), or the first free one in ``[low, high)``."""
    for port in range(low, high) if low else [0]:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return s.getsockname()[1]
    raise RuntimeError(f"no free port in [{low}, {high})")


def clean_env(**extra: str) -> dict[str, str]:
    """This environment without any launcher's or cluster's variables, plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if k not in LAUNCHED and not k.startswith(("SLURM_", "TORCHELASTIC"))}
    return env | {"PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"} | extra


def prompts_file(tmp_path: Path) -> Path:
    path = tmp_path / "prompts.txt"
    path.write_text("\n".join(PROMPTS) + "\n")
    return path


def check_run(run_dir: Path) -> dict[str, torch.Tensor]:
    """Every prompt exactly once in one manifest that every reader takes, each with an intact PNG; returns
    ``{id: image}``, the images as decoded from their files."""
    lines = (run_dir / "manifest.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line whole: a cut line would not parse
    assert sorted(r["prompt"] for r in records) == sorted(PROMPTS)
    assert len({r["id"] for r in records}) == len(PROMPTS)
    assert read_records(run_dir) == records
    images = {r["id"]: decode_image(str(run_dir / r["image"]), mode=ImageReadMode.RGB) for r in records}
    assert all(image.shape == (3, 16, 16) for image in images.values())
    assert [i.record for i in read_manifest(run_dir)] == records
    assert not [p for p in run_dir.rglob(".tmp-*")], "a temporary file was left"
    return images


def test_torchrun_two_nodes_invert_every_prompt_once(tmp_path):
    run_dir, port = tmp_path / "run", free_port()
    nodes = [
        subprocess.Popen(
            [
                *(sys.executable, "-m", "torch.distributed.run", "--nnodes=2", f"--node-rank={rank}"),
                *("--nproc-per-node=1", "--master-addr=127.0.0.1", f"--master-port={port}"),
                *("-m", "clip_inversion", "fit", "--config", str(ROOT / "configs" / "quickstart.yaml")),
                *(f"--data.prompts_file={prompts_file(tmp_path)}", f"--trainer.default_root_dir={run_dir}"),
                *("--model.steps=3", "--trainer.num_nodes=2", "--trainer.devices=1", *TINY),
            ],
            env=clean_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for rank in (0, 1)
    ]
    outputs = [node.communicate(timeout=300)[0] for node in nodes]
    assert [node.returncode for node in nodes] == [0, 0], outputs
    check_run(run_dir)
    assert "12 of 12 prompts finished" in outputs[0]


@pytest.fixture
def slurm(tmp_path: Path) -> dict[str, str]:
    """A two-node allocation of one task a node, as ``sbatch --nodes=2 --ntasks-per-node=1`` would give it:
    stand-in ``srun`` and ``scontrol`` on PATH, and a job id whose last four digits give a free port, since
    Lightning derives MASTER_PORT from them."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "srun").write_text(FAKE_SRUN.format(python=sys.executable))
    (bin_dir / "scontrol").write_text(f'#!/bin/sh\necho "$@" >> {tmp_path / "scontrol.log"}\n')
    for tool in ("srun", "scontrol"):
        (bin_dir / tool).chmod(stat.S_IRWXU)
    port = free_port(15000, 25000)
    return clean_env(
        PATH=f"{bin_dir}:{Path(sys.executable).parent}:{os.environ['PATH']}",
        SLURM_JOB_ID=f"4{port - 15000:04d}",
        SLURM_JOB_NAME="clip-inversion",
        SLURM_NNODES="2",
        SLURM_NTASKS_PER_NODE="1",
        SLURM_JOB_NODELIST="localhost",
        SLURM_NODELIST="localhost",
        CONFIG=str(ROOT / "configs" / "quickstart.yaml"),
        PROMPTS=str(prompts_file(tmp_path)),
        FAKE_SRUN_PID=str(tmp_path / "srun.pid"),
    )


def sbatch(env: dict[str, str], run_dir: Path, *args: str) -> subprocess.Popen:
    """Start the shipped sbatch script as SLURM would start it on the first node (its #SBATCH lines are
    comments to bash)."""
    return subprocess.Popen(
        ["bash", str(SBATCH), *TINY, *args],
        env=env | {"RUN_DIR": str(run_dir)},
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def finish(job: subprocess.Popen) -> str:
    output = job.communicate(timeout=300)[0]
    assert job.returncode == 0, output
    return output


def test_slurm_allocation_of_two_nodes_runs_the_sbatch_script(tmp_path, slurm):
    output = finish(sbatch(slurm, tmp_path / "run", "--model.steps=3"))
    check_run(tmp_path / "run")
    assert "12 of 12 prompts finished" in output
    assert "no last checkpoint available" in output  # --ckpt_path=last on a first run starts afresh


def test_slurm_requeue_signal_saves_every_rank_and_the_requeued_job_resumes_mid_batch(tmp_path, slurm):
    steps, per_epoch = 40, 6  # 12 prompts: 2 epochs of 2 ranks x 3 prompts
    options = [f"--model.steps={steps}", "--writer.snapshot_steps=[5]"]
    finish(sbatch(slurm, tmp_path / "reference", *options))
    reference = check_run(tmp_path / "reference")

    run_dir = tmp_path / "run"
    job = sbatch(slurm, run_dir, *options)
    second_epoch = run_dir / "snapshots"
    deadline = time.time() + 300
    while not any(second_epoch.glob(f"{per_epoch:05d}_*/step-00005.png")):  # rank 0 is 5 steps into epoch 2
        assert job.poll() is None and time.time() < deadline, job.communicate()[0]
        time.sleep(0.05)
    os.kill(int(Path(slurm["FAKE_SRUN_PID"]).read_text()), signal.SIGUSR1)  # SLURM: "time limit in 120 s"
    output = finish(job)
    assert (tmp_path / "scontrol.log").read_text() == f"requeue {slurm['SLURM_JOB_ID']}\n"
    assert "6 of 12 prompts finished" in output and len(read_records(run_dir)) == per_epoch
    checkpoint = torch.load(run_dir / "checkpoints" / "last.ckpt", weights_only=True)
    assert steps + 5 <= checkpoint["global_step"] < 2 * steps  # saved in the middle of the second batch
    saved = [rank["prompts"]["ids"] for rank in checkpoint["ranks"]]
    assert saved == [[f"{i:05d}" for i in range(6, 9)], [f"{i:05d}" for i in range(9, 12)]]

    output = finish(sbatch(slurm, run_dir, *options))  # the requeued job: the same script again
    assert "Resuming: 6 of 12 prompts already finished" in output
    resumed = check_run(run_dir)
    # Every rank went on from its own state at its own step: the images of the uninterrupted run, exactly.
    assert resumed.keys() == reference.keys()
    for prompt_id, image in reference.items():
        assert torch.equal(resumed[prompt_id], image), prompt_id
    assert (tmp_path / "scontrol.log").read_text().count("requeue") == 1
