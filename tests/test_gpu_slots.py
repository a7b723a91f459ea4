"""claim_gpu: concurrent jobs never share a GPU slot, a killed job frees its slot, SLURM and GPU-less machines are untouched.

Concurrency is tested with real processes (each a tiny Python snippet that
claims a slot among the simulated devices "0", "1", "2" and reports what it
got), released by the kernel as in a real job; the rest runs in-process with
a plain dict as the environment. No GPU is needed.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from itertools import combinations
from pathlib import Path

import pytest

from tilepipe import gpu_slots
from tilepipe.gpu_slots import GpuSlotsBusy, claim_gpu, count_gpus, visible_devices

ROOT = Path(__file__).resolve().parents[1]
DEVICES = ["0", "1", "2"]

# Claims a slot among the devices argv[5] ("0,1,2") in lock dir argv[1] with
# timeout argv[2]; when a file argv[3] is named, first says it is ready (a file
# ready<pid> beside it) and waits for it to exist (a start barrier); prints
# what it got as one JSON line, then holds the slot argv[4] seconds (or until
# killed) and prints when it stopped.
CLAIMANT = """
import json, os, sys, time
from pathlib import Path
from tilepipe.gpu_slots import claim_gpu
lock_dir, timeout, go, hold = sys.argv[1], float(sys.argv[2]), sys.argv[3], float(sys.argv[4])
if go:
    Path(go).with_name(f"ready{os.getpid()}").touch()
    while not Path(go).exists():
        time.sleep(0.005)
try:
    claim = claim_gpu(lock_dir, devices=sys.argv[5].split(","), timeout=timeout, poll=0.01)
except TimeoutError as err:
    print(json.dumps({"error": str(err)}), flush=True)
    sys.exit(3)
start = time.monotonic()
print(json.dumps({"pid": os.getpid(), "device": claim.device, "source": claim.source,
                  "visible": os.environ["CUDA_VISIBLE_DEVICES"], "start": start}), flush=True)
time.sleep(hold)
print(json.dumps({"end": time.monotonic()}), flush=True)
"""


def start_claimant(lock_dir: Path, *, timeout: float = 10, go: Path | None = None, hold: float = 3600):
    env = {k: v for k, v in os.environ.items() if k not in ("SLURM_JOB_ID", "CUDA_VISIBLE_DEVICES")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.Popen(
        [sys.executable, "-c", CLAIMANT, str(lock_dir), str(timeout), str(go or ""), str(hold), ",".join(DEVICES)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def first_report(proc: subprocess.Popen) -> dict:
    """The claimant's first JSON line: what it claimed, or its error."""
    line = proc.stdout.readline()
    assert line, f"claimant exited without a report: {proc.stderr.read()}"
    return json.loads(line)


@pytest.fixture
def lock_dir(tmp_path):
    return tmp_path / ".snakemake" / "gpu_slots"


@pytest.fixture
def holders(lock_dir):
    """Three processes holding the three slots until the test ends (killed at teardown)."""
    procs = [start_claimant(lock_dir) for _ in DEVICES]
    reports = [first_report(p) for p in procs]
    yield procs, reports
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        proc.communicate()


def test_concurrent_jobs_never_share_a_slot(lock_dir, tmp_path):
    """Seven claimants start at once on three devices: a device's holding intervals never overlap."""
    n, hold = 7, 0.25
    go = tmp_path / "go"
    procs = [start_claimant(lock_dir, go=go, hold=hold) for _ in range(n)]
    deadline = time.monotonic() + 30
    while len(list(tmp_path.glob("ready*"))) < n:
        assert time.monotonic() < deadline, "claimants did not start"
        time.sleep(0.01)
    go.touch()
    runs = []
    for proc in procs:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        claimed, ended = (json.loads(line) for line in out.splitlines())
        assert claimed["source"] == "slot" and claimed["visible"] == claimed["device"] in DEVICES
        runs.append((claimed["device"], claimed["start"], ended["end"]))

    assert {device for device, _, _ in runs} == set(DEVICES)  # every slot was used
    for (dev_a, start_a, end_a), (dev_b, start_b, end_b) in combinations(runs, 2):
        if dev_a == dev_b:  # 7 claimants on 3 devices: such pairs exist
            assert end_a <= start_b or end_b <= start_a, f"device {dev_a} held by two processes at once"
    # At most three processes held a slot at any moment, and they did run side by side.
    held_at = [sum(start <= t < end for _, start, end in runs) for _, t, _ in runs]
    assert 2 <= max(held_at) <= len(DEVICES)


def test_killed_job_frees_its_slot(lock_dir, holders):
    procs, reports = holders
    assert sorted(r["device"] for r in reports) == DEVICES
    victim = 1
    procs[victim].send_signal(signal.SIGKILL)
    procs[victim].wait(timeout=10)
    newcomer = start_claimant(lock_dir, timeout=10)
    try:
        report = first_report(newcomer)
        assert report["device"] == report["visible"] == reports[victim]["device"]
    finally:
        newcomer.kill()
        newcomer.communicate()


def test_all_slots_busy_waits_then_names_the_lock_dir(lock_dir, holders):
    procs, reports = holders
    waiter = start_claimant(lock_dir, timeout=0.5)
    out, err = waiter.communicate(timeout=30)
    assert waiter.returncode == 3, err
    message = json.loads(out)["error"]
    assert message.startswith(f"{lock_dir}: all 3 GPU slots")
    assert "--resources gpu=3" in message
    assert all(f"pid {r['pid']}" in message for r in reports)
    # In-process as well: the exception type, and that it waited the timeout.
    began = time.monotonic()
    with pytest.raises(GpuSlotsBusy, match=str(lock_dir)):
        claim_gpu(lock_dir, environ={}, devices=DEVICES, timeout=0.3, poll=0.05)
    assert time.monotonic() - began >= 0.3


def test_waiter_gets_the_slot_that_frees(lock_dir, holders):
    procs, reports = holders
    environ: dict[str, str] = {}
    procs[0].send_signal(signal.SIGKILL)  # frees while the claim below polls
    claim = claim_gpu(lock_dir, environ=environ, devices=DEVICES, timeout=10, poll=0.01)
    with claim:
        assert claim.device == environ["CUDA_VISIBLE_DEVICES"] == reports[0]["device"]


def test_slurm_job_is_untouched(lock_dir):
    environ = {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "1"}
    claim = claim_gpu(lock_dir, environ=environ, gpu_count=pytest.fail)
    assert claim.describe() == {"device": "1", "source": "slurm"}
    assert environ == {"SLURM_JOB_ID": "42", "CUDA_VISIBLE_DEVICES": "1"}
    assert not lock_dir.exists() and not claim.held


def test_no_gpus_is_untouched(lock_dir):
    environ: dict[str, str] = {}
    claim = claim_gpu(lock_dir, environ=environ, gpu_count=lambda: 0)
    assert claim.describe() == {"device": None, "source": "none"}
    assert environ == {} and not lock_dir.exists()
    # A user hiding every GPU: the same.
    for hidden in ("", "-1"):
        environ = {"CUDA_VISIBLE_DEVICES": hidden}
        assert claim_gpu(lock_dir, environ=environ, gpu_count=lambda: 4).source == "none"
        assert environ == {"CUDA_VISIBLE_DEVICES": hidden}


def test_counted_gpus_become_slots(lock_dir):
    environ: dict[str, str] = {}
    with claim_gpu(lock_dir, environ=environ, gpu_count=lambda: 2) as claim:
        assert claim.describe() == {"device": "0", "source": "slot"}
        assert environ == {"CUDA_VISIBLE_DEVICES": "0"}
        assert claim.lock_path == lock_dir / "gpu0.lock"


def test_user_visible_devices_map_the_slots(lock_dir):
    """CUDA_VISIBLE_DEVICES="2,3": the slots are devices 2 and 3; a third claimant waits and times out."""
    claims, environs = [], []
    for _ in range(2):
        environ = {"CUDA_VISIBLE_DEVICES": "2,3"}
        claims.append(claim_gpu(lock_dir, environ=environ, gpu_count=pytest.fail, timeout=0))
        environs.append(environ)
    assert [c.device for c in claims] == [e["CUDA_VISIBLE_DEVICES"] for e in environs] == ["2", "3"]
    assert sorted(p.name for p in lock_dir.iterdir()) == ["gpu2.lock", "gpu3.lock"]
    with pytest.raises(GpuSlotsBusy, match=r"devices 2,3"):
        claim_gpu(lock_dir, environ={"CUDA_VISIBLE_DEVICES": "2,3"}, timeout=0.1, poll=0.01)
    claims[0].release()
    assert not claims[0].held and claims[1].held
    again = claim_gpu(lock_dir, environ={"CUDA_VISIBLE_DEVICES": "2,3"}, timeout=0)
    assert again.device == "2"
    for claim in (claims[1], again):
        claim.release()


def test_process_environment_claim_is_made_once(lock_dir, monkeypatch):
    """With os.environ, a second call returns the held claim instead of narrowing the devices again."""
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "5,6")
    first = claim_gpu(lock_dir, timeout=0)
    try:
        assert os.environ["CUDA_VISIBLE_DEVICES"] == "5"
        assert claim_gpu(lock_dir, timeout=0) is first
    finally:
        first.release()
    assert lock_dir.resolve() not in gpu_slots._HELD


def test_refuses_after_torch_initialised_cuda(lock_dir, monkeypatch):
    class Cuda:
        @staticmethod
        def is_initialized():
            return True

    class Torch:
        cuda = Cuda

    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.setitem(sys.modules, "torch", Torch)
    with pytest.raises(RuntimeError, match="before importing torch"):
        claim_gpu(lock_dir, timeout=0)
    assert os.environ["CUDA_VISIBLE_DEVICES"] == "0,1"


def test_visible_devices():
    assert visible_devices("2,3") == ["2", "3"]
    assert visible_devices(" 1 , 0,1") == ["1", "0"]
    assert visible_devices("GPU-8f1c,MIG-2a") == ["GPU-8f1c", "MIG-2a"]
    assert visible_devices("0,-1,2") == ["0"]
    assert visible_devices("") == visible_devices("-1") == []


def test_count_gpus_without_cuda(tmp_path):
    smi = tmp_path / "nvidia-smi"
    smi.write_text(
        "#!/bin/sh\n"
        "echo 'GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)'\n"
        "echo '  MIG 1g.5gb     Device  0: (UUID: MIG-bbbb)'\n"
        "echo 'GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)'\n"
    )
    smi.chmod(0o755)
    proc = tmp_path / "gpus"
    for address in ("0000:07:00.0", "0000:0a:00.0", "0000:44:00.0"):
        (proc / address).mkdir(parents=True)
    assert count_gpus(nvidia_smi=str(smi), proc_dir=proc) == 2
    # No nvidia-smi, or a failing one: the driver's /proc entries.
    assert count_gpus(nvidia_smi=str(tmp_path / "missing"), proc_dir=proc) == 3
    broken = tmp_path / "broken-smi"
    broken.write_text("#!/bin/sh\necho 'NVIDIA-SMI has failed' >&2\nexit 9\n")
    broken.chmod(0o755)
    assert count_gpus(nvidia_smi=str(broken), proc_dir=proc) == 3
    assert count_gpus(nvidia_smi=str(tmp_path / "missing"), proc_dir=tmp_path / "no-driver") == 0
