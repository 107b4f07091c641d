"""The Slurm queue driver against a real one-host Slurm cluster (munged, slurmctld, slurmd, 4 fake GPUs)."""

from __future__ import annotations

import asyncio
import time

import pytest

from drivers.errors import Fatal, MalformedReply, Rejected, Timeout, Unavailable
from drivers.queues.slurm import SlurmOptions, SlurmQueue, SlurmQueueSpec
from drivers.queues.slurm_cli import SlurmCli, gpus_in, parse_records, parse_squeue_json
from scheduler.core.model import Device, DeviceKind, OutcomeStatus, Pool, Workload
from tests.slurm_cluster import NODE, SlurmCluster

POOLS = {"main": Pool("main", "stratum+tcp://main.pool.invalid:3333", "w")}


def gpu_node(gpus: int = 4) -> Device:
    return Device(
        id="gpu-1",
        kind=DeviceKind.GPU_NODE,
        model="4xGPU",
        driver="slurm",
        address=NODE,
        port=0,
        nominal_hashrate_hs=2e12,
        nominal_power_w=3000.0,
        sleep_power_w=400.0,
        pools=("main",),
        gpus=gpus,
        queues=("train",),
    )


def driver(
    cluster: SlurmCluster, *, preemption: bool = False, confirm_s: float = 8.0
) -> SlurmQueue:
    options = SlurmOptions(
        partition="ai",
        slurm_conf=str(cluster.conf),
        mining_command="exec sleep 600",
        confirm_timeout_seconds=confirm_s,
        confirm_interval_seconds=0.2,
        cache_seconds=0.0,
    )
    return SlurmQueue(options, {"train": SlurmQueueSpec("ai", preemption)}, POOLS)


def wait_for(check: object, timeout_s: float = 20.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.2)


def test_gpus_in_reads_every_tres_form() -> None:
    assert gpus_in("gres:gpu:2") == 2
    assert gpus_in("gres/gpu=4") == 4
    assert gpus_in("gres:gpu:a100:3") == 3
    assert gpus_in("cpu=1,mem=20000M,node=1") == 0
    assert gpus_in("") == 0


def test_parse_squeue_json_rejects_a_document_without_jobs() -> None:
    with pytest.raises(MalformedReply, match="squeue --json"):
        parse_squeue_json('{"meta": {}}', "slurm")
    with pytest.raises(MalformedReply):
        parse_squeue_json("not json", "slurm")
    with pytest.raises(MalformedReply, match="job_id"):
        parse_squeue_json('{"jobs": [{"name": "x"}]}', "slurm")


def test_parse_records_keeps_reasons_with_spaces() -> None:
    records = parse_records(
        "NodeName=n1 State=IDLE+DRAIN Reason=wattmux:sleep by hand Gres=gpu:4\n"
    )
    assert records == [
        {
            "NodeName": "n1",
            "State": "IDLE+DRAIN",
            "Reason": "wattmux:sleep by hand",
            "Gres": "gpu:4",
        }
    ]


@pytest.mark.system
async def test_a_missing_client_is_fatal() -> None:
    with pytest.raises(Fatal, match="not found"):
        await SlurmCli("slurm").run("/nonexistent/squeue")


@pytest.mark.system
async def test_demand_counts_pending_jobs_and_gpus_per_partition(slurm: SlurmCluster) -> None:
    queue = driver(slurm)
    slurm.sbatch("-p", "ai", "--gres=gpu:4", "--wrap", "exec sleep 60")
    wait_for(lambda: slurm.node_state().split("+")[0] in ("MIXED", "ALLOCATED"))
    slurm.sbatch("-p", "ai", "--gres=gpu:2", "--wrap", "exec sleep 60")
    slurm.sbatch("-p", "ai", "--gpus=3", "--wrap", "exec sleep 60")
    slurm.sbatch("-p", "mining", "--gres=gpu:1", "--wrap", "exec sleep 60")
    demand = await queue.demand()
    assert demand["train"].pending_jobs == 2
    assert demand["train"].pending_gpus == 5
    sample = await queue.collect(gpu_node())
    assert sample.workload == Workload.ai("train")
    assert [job.gpus for job in sample.jobs] == [4]
    assert sample.power_w == pytest.approx(3000.0)


@pytest.mark.system
async def test_mine_then_back_to_ai_on_an_idle_node(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm), gpu_node()
    outcome = await queue.apply(node, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    running = slurm.command("squeue", "-h", "-t", "R", "-o", "%j %P %b")
    assert running.split() == [f"wattmux-mine-{NODE}", "mining", "gres:gpu:4"]
    assert f"wattmux-{NODE}" in slurm.command("scontrol", "-o", "show", "reservation")
    ai_job = slurm.sbatch("-p", "ai", "--gres=gpu:1", "--wrap", "exec sleep 60")
    await asyncio.sleep(1.5)
    assert slurm.job_state(ai_job) == "PENDING"  # the reservation keeps AI work off
    assert (await queue.demand())["train"].pending_gpus == 1
    outcome = await queue.apply(node, Workload.ai("train"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    wait_for(lambda: slurm.job_state(ai_job) == "RUNNING")
    assert "wattmux-mine" not in slurm.command("squeue", "-h", "-o", "%j")
    assert "ReservationName" not in slurm.command("scontrol", "-o", "show", "reservation")


@pytest.mark.system
async def test_a_running_ai_job_is_never_killed_without_preemption(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm, confirm_s=2.0), gpu_node()
    ai_job = slurm.sbatch("-p", "ai", "--gres=gpu:2", "--wrap", "exec sleep 8")
    wait_for(lambda: slurm.job_state(ai_job) == "RUNNING")
    outcome = await queue.apply(node, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert f"AI jobs still running: {ai_job} (2 GPUs)" in outcome.detail
    assert slurm.job_state(ai_job) == "RUNNING"
    later = slurm.sbatch("-p", "ai", "--gres=gpu:1", "--wrap", "exec sleep 60")
    await asyncio.sleep(1.0)
    assert slurm.job_state(later) == "PENDING"  # drained for AI work while the lease runs out
    wait_for(lambda: slurm.job_state(ai_job) == "")  # it ran to its natural end
    queue.options = queue.options.model_copy(update={"confirm_timeout_seconds": 10.0})
    outcome = await queue.apply(node, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail


@pytest.mark.system
async def test_preemption_requeues_the_ai_job_when_allowed(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm, preemption=True), gpu_node()
    ai_job = slurm.sbatch("-p", "ai", "--gres=gpu:4", "--wrap", "exec sleep 300")
    wait_for(lambda: slurm.job_state(ai_job) == "RUNNING")
    outcome = await queue.apply(node, Workload.mine("main"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert slurm.job_state(ai_job) == "PENDING"  # requeued, not cancelled
    assert (await queue.demand())["train"].pending_gpus == 4


@pytest.mark.system
async def test_sleep_drains_and_ai_resumes(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm), gpu_node()
    outcome = await queue.apply(node, Workload.sleep())
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert "DRAIN" in slurm.node_state()
    assert (await queue.collect(node)).power_w == pytest.approx(400.0)
    outcome = await queue.apply(node, Workload.ai("train"))
    assert outcome.status is OutcomeStatus.CONFIRMED, outcome.detail
    assert "DRAIN" not in slurm.node_state()


@pytest.mark.system
async def test_an_operator_drain_is_not_undone(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm, confirm_s=1.0), gpu_node()
    slurm.command("scontrol", "update", f"nodename={NODE}", "state=drain", "reason=maintenance")
    outcome = await queue.apply(node, Workload.ai("train"))
    assert outcome.status is OutcomeStatus.UNCONFIRMED
    assert "DRAIN" in slurm.node_state()


@pytest.mark.system
async def test_unknown_queue_and_off_are_rejected(slurm: SlurmCluster) -> None:
    queue, node = driver(slurm), gpu_node()
    with pytest.raises(Rejected, match="not on this cluster"):
        await queue.apply(node, Workload.ai("inference"))
    with pytest.raises(Rejected, match="powered off"):
        await queue.apply(node, Workload.off())


@pytest.mark.system
async def test_client_failures_are_classified() -> None:
    cli = SlurmCli("slurm", timeout_seconds=0.3)
    with pytest.raises(Unavailable, match="Unable to contact"):
        await cli.run(
            "sh", "-c", "echo 'Unable to contact slurm controller (connect failure)' >&2; exit 1"
        )
    with pytest.raises(Rejected, match="Invalid job id"):
        await cli.run("sh", "-c", "echo 'scancel: error: Invalid job id specified' >&2; exit 1")
    with pytest.raises(Timeout, match="no answer"):
        await cli.run("sleep", "5")
