"""How a process decides to join a job (the joining itself runs in tests/test_multihost.py)."""
import pytest

from sidjax.parallel import distributed

MULTI_PROCESS_ENV = ("SLURM_NTASKS", "TPU_WORKER_HOSTNAMES", "OMPI_COMM_WORLD_SIZE", distributed.ENV_COORDINATOR,
                     distributed.ENV_NUM_PROCESSES, distributed.ENV_PROCESS_ID)


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for name in MULTI_PROCESS_ENV:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(distributed, "_detected_cluster", lambda: None)


def test_single_process_is_a_no_op_with_this_process_alone():
    topology = distributed.initialize("single")
    assert topology.mode == "single" and topology.process_id == 0 and topology.num_processes == 1
    assert topology.global_devices == topology.local_devices


@pytest.mark.parametrize("name, value", [("SLURM_NTASKS", "8"), ("TPU_WORKER_HOSTNAMES", "w0,w1"),
                                         ("OMPI_COMM_WORLD_SIZE", "2")])
def test_single_refuses_inside_a_multi_process_job(monkeypatch, name, value):
    monkeypatch.setenv(name, value)
    with pytest.raises(distributed.DistributedError, match=f"{name}.*--distributed=auto"):
        distributed.initialize("single")


def test_auto_without_a_cluster_is_an_error_not_a_single_process_run():
    with pytest.raises(distributed.DistributedError, match="found no coordinator.*--distributed=single"):
        distributed.initialize("auto")


def test_explicit_names_what_is_missing(monkeypatch):
    with pytest.raises(distributed.DistributedError, match="--num_processes, --process_id"):
        distributed.initialize("explicit", coordinator_address="127.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_NUM_PROCESSES, "2")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "2")
    with pytest.raises(distributed.DistributedError, match="--process_id 2 is not in 0..1"):
        distributed.initialize("explicit", coordinator_address="127.0.0.1:1234")
    monkeypatch.setenv(distributed.ENV_PROCESS_ID, "x")
    with pytest.raises(distributed.DistributedError, match="SIDJAX_PROCESS_ID='x' is not an integer"):
        distributed.initialize("explicit", coordinator_address="127.0.0.1:1234")


def test_unknown_mode():
    with pytest.raises(distributed.DistributedError, match="--distributed must be one of"):
        distributed.initialize("mpi")
