"""Ascend rank tables (mpltool/ranktable.py) and the launcher that runs one process per device
(mpltool/train/launch.py): the files HCCL reads must match the hiascend templates exactly, and a dead
rank must end the whole job with a message that names it."""

import json
import os
import socket
import sys
import textwrap
import time

import pytest

from mpltool import ranktable
from mpltool.errors import InvalidInputError, MpltoolError, PrerequisiteError, ToolFailedError, UsageError
from mpltool.manifest import Project
from mpltool.train import launch

ADDRESSES = {d: "192.168.100.{}".format(101 + d) for d in range(8)}

HCCN_TEXT = "".join("address_{}={}\nnetmask_{}=255.255.255.0\nnetdetect_{}=192.168.100.1\n".format(
    d, ADDRESSES[d], d, d) for d in range(8)) + "# comment\ngateway_0=192.168.100.1\n"


@pytest.fixture
def hccn_conf(tmp_path):
    path = tmp_path / "hccn.conf"
    path.write_text(HCCN_TEXT)
    return path


def template_1(devices=range(8), server_id="node_0"):
    return {"status": "completed", "version": "1.0", "server_count": "1",
            "server_list": [{"server_id": server_id, "device": [
                {"device_id": str(d), "device_ip": "192.168.1.{}".format(8 + d), "rank_id": str(r)}
                for r, d in enumerate(devices)]}]}


def template_2():
    return {"status": "completed", "group_count": "1", "group_list": [{
        "group_name": "hccl_world_group", "instance_count": "2", "device_count": "8", "instance_list": [
            {"pod_name": "pod_a", "server_id": "10.0.0.1",
             "devices": [{"device_id": d, "device_ip": "192.168.1.{}".format(d)} for d in ("3", "1", "2", "0")]},
            {"pod_name": "pod_b", "server_id": "10.0.0.2",
             "devices": [{"device_id": d, "device_ip": "192.168.2.{}".format(d)} for d in ("4", "5", "6", "7")]},
        ]}]}


def write_json(path, data):
    path.write_text(json.dumps(data))
    return path


# -- parse_devices ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("text,devices", [("0-7", list(range(8))), ("0,1,2,3", [0, 1, 2, 3]), ("4", [4]),
                                          ("2-3", [2, 3])])
def test_parse_devices_accepts_the_documented_forms(text, devices):
    """--devices takes ranges and lists; the order given is the rank order."""
    assert ranktable.parse_devices(text) == devices


@pytest.mark.parametrize("text,message", [
    ("0-8", "--devices '0-8': device 8 is out of range 0-7"),
    ("3,3", "--devices '3,3': a device is named twice"),
    ("0-2", "--devices '0-2': 3 devices; one server trains on 1, 2, 4 or 8"),
    ("a", "--devices 'a': expected ids such as 0-7, 0,1,2,3 or 4"),
    ("5-4", "--devices '5-4': range 5-4 runs backwards"),
])
def test_parse_devices_refuses_what_hccl_cannot_run(text, message):
    """HCCL rejects these at start-up with an obscure error; we refuse them before anything is spawned."""
    with pytest.raises(UsageError) as caught:
        ranktable.parse_devices(text)
    assert str(caught.value) == message


# -- hccn.conf and building a table ----------------------------------------------------------------------


def test_read_hccn_conf_takes_only_address_lines(hccn_conf):
    """netmask/netdetect/gateway lines share the file; only address_<id> is a device IP."""
    assert ranktable.read_hccn_conf(str(hccn_conf)) == ADDRESSES


def test_read_hccn_conf_missing_points_to_rank_table(tmp_path):
    """Without the file the user needs to know the way out: --rank-table."""
    with pytest.raises(InvalidInputError) as caught:
        ranktable.read_hccn_conf(str(tmp_path / "absent.conf"))
    assert caught.value.message.startswith("cannot read {} (".format(tmp_path / "absent.conf"))
    assert "--rank-table" in caught.value.hint


def test_build_rank_table_is_template_1_with_strings(hccn_conf):
    """HCCL wants every value as a string and rank ids in the order of the devices."""
    table = ranktable.build_rank_table(list(range(8)), ranktable.read_hccn_conf(str(hccn_conf)), "host-a")
    assert table == {"status": "completed", "version": "1.0", "server_count": "1", "server_list": [
        {"server_id": "host-a", "device": [
            {"device_id": str(d), "device_ip": "192.168.100.{}".format(101 + d), "rank_id": str(d)}
            for d in range(8)]}]}
    reordered = ranktable.build_rank_table([4, 5], ADDRESSES, "host-a")
    assert reordered["server_list"][0]["device"] == [
        {"device_id": "4", "device_ip": "192.168.100.105", "rank_id": "0"},
        {"device_id": "5", "device_ip": "192.168.100.106", "rank_id": "1"}]


def test_build_rank_table_names_a_device_without_address():
    """A device hccn_tool never configured has no IP: say which one."""
    addresses = {d: ip for d, ip in ADDRESSES.items() if d != 5}
    with pytest.raises(InvalidInputError) as caught:
        ranktable.build_rank_table(list(range(8)), addresses, "host-a")
    assert caught.value.message == "no address_5 line in hccn.conf for device 5"
    assert "hccn_tool -i 5" in caught.value.hint


# -- load_rank_table ---------------------------------------------------------------------------------------


def test_load_template_1_sorts_by_rank(tmp_path):
    """Ranks come back by rank id, whatever order the table lists the devices in."""
    table = template_1()
    table["server_list"][0]["device"].reverse()
    ranks = ranktable.load_rank_table(write_json(tmp_path / "t.json", table))
    assert ranks == [{"rank": d, "server_id": "node_0", "device_id": d, "device_ip": "192.168.1.{}".format(8 + d)}
                     for d in range(8)]


def test_load_template_2_ranks_in_listed_order(tmp_path):
    """The legacy template has no rank ids: the listing order is the rank order."""
    ranks = ranktable.load_rank_table(write_json(tmp_path / "t.json", template_2()))
    expected = [("10.0.0.1", d, "192.168.1.{}".format(d)) for d in (3, 1, 2, 0)] + \
               [("10.0.0.2", d, "192.168.2.{}".format(d)) for d in (4, 5, 6, 7)]
    assert ranks == [{"rank": r, "server_id": s, "device_id": d, "device_ip": ip}
                     for r, (s, d, ip) in enumerate(expected)]


def _duplicate_rank(t):
    t["server_list"][0]["device"][4]["rank_id"] = "3"


def _device_8(t):
    t["server_list"][0]["device"][7]["device_id"] = "8"


def _gap(t):
    t["server_list"][0]["device"] = t["server_list"][0]["device"][:4]
    t["server_list"][0]["device"][3]["rank_id"] = "4"


def _three(t):
    t["server_list"][0]["device"] = t["server_list"][0]["device"][:3]


def _twice(t):
    t["server_list"][0]["device"] = t["server_list"][0]["device"][:4]
    t["server_list"][0]["device"][3]["device_id"] = "2"


def _numeric_rank(t):
    t["server_list"][0]["device"][0]["rank_id"] = 0


@pytest.mark.parametrize("change,message", [
    (_duplicate_rank, "rank_id 3 appears more than once"),
    (_device_8, "server node_0: device_id 8 is out of range 0-7"),
    (lambda t: t.update(server_count="2"), "server_count is 2 but server_list has 1 servers"),
    (lambda t: t.update(status="initializing"), "status is 'initializing', not 'completed'"),
    (_gap, "rank ids must be 0..3 without gaps, got [0, 1, 2, 4]"),
    (_three, "server node_0 has 3 devices; a server takes part with 1, 2, 4 or 8"),
    (_twice, "server node_0 lists a device twice"),
    (_numeric_rank, "server node_0 device 0 rank_id must be a string of digits, got 0"),
], ids=["duplicate-rank", "device-8", "server-count", "status", "gap", "three", "twice", "numeric"])
def test_load_template_1_refuses(tmp_path, change, message):
    """Each of these makes HCCL fail or hang at start-up; the message names the problem."""
    table = template_1()
    change(table)
    path = write_json(tmp_path / "t.json", table)
    with pytest.raises(InvalidInputError) as caught:
        ranktable.load_rank_table(path)
    assert str(caught.value) == "rank table {}: {}".format(path, message)


def test_load_refuses_text_that_is_not_json(tmp_path):
    """A truncated copy of a table is a one-line input error, not a traceback."""
    path = tmp_path / "t.json"
    path.write_text('{"status": "completed", ')
    with pytest.raises(InvalidInputError) as caught:
        ranktable.load_rank_table(path)
    assert str(caught.value).startswith("rank table {}: not JSON (".format(path))


def test_load_template_2_refuses_device_count_mismatch(tmp_path):
    """device_count disagreeing with the instances means the table was edited by hand and half-done."""
    table = template_2()
    table["group_list"][0]["instance_list"].pop()
    path = write_json(tmp_path / "t.json", table)
    with pytest.raises(InvalidInputError) as caught:
        ranktable.load_rank_table(path)
    assert str(caught.value) == "rank table {}: device_count is 8 but the instances list 4 devices".format(path)


# -- rank_environment --------------------------------------------------------------------------------------


def test_rank_environment_is_exact():
    """These six variables are what HCCL and mpltool/parallel.py read; DEVICE_ID for older code."""
    rank = {"rank": 5, "server_id": "node_0", "device_id": 6, "device_ip": "192.168.1.14"}
    assert ranktable.rank_environment(rank, 8, "/tmp/rt.json", "abc123") == {
        "RANK_TABLE_FILE": "/tmp/rt.json", "RANK_SIZE": "8", "RANK_ID": "5", "ASCEND_DEVICE_ID": "6",
        "DEVICE_ID": "6", "JOB_ID": "abc123"}


# -- ascend_ranks -------------------------------------------------------------------------------------------


def test_ascend_ranks_writes_a_table_for_this_host(tmp_path, hccn_conf):
    """Without --rank-table the launcher writes one that load_rank_table accepts, for this host."""
    project = Project(tmp_path / "p")
    path, ranks, host_ranks = launch.ascend_ranks(project, list(range(8)), None, hccn_conf=str(hccn_conf))
    assert path == tmp_path / "p" / "logs" / "rank_table.json"
    host = socket.gethostname()
    assert json.loads(path.read_text()) == ranktable.build_rank_table(list(range(8)), ADDRESSES, host)
    expected = [{"rank": d, "server_id": host, "device_id": d, "device_ip": ADDRESSES[d]} for d in range(8)]
    assert ranktable.load_rank_table(path) == expected
    assert ranks == expected and host_ranks == expected


def test_ascend_ranks_uses_a_given_table(tmp_path):
    """A cluster's own table is checked and used as it is; nothing is written to the project."""
    given = write_json(tmp_path / "given.json", template_1())
    project = Project(tmp_path / "p")
    path, ranks, host_ranks = launch.ascend_ranks(project, list(range(8)), str(given))
    assert path == given
    assert ranks == ranktable.load_rank_table(given)
    assert host_ranks == ranks
    assert not (tmp_path / "p").exists()


def test_ascend_ranks_refuses_a_device_the_table_lacks(tmp_path):
    """--devices 4,5 against a table of devices 0-3 would start processes HCCL never admits."""
    given = write_json(tmp_path / "given.json", template_1(devices=range(4)))
    with pytest.raises(UsageError) as caught:
        launch.ascend_ranks(Project(tmp_path / "p"), [4, 5], str(given))
    assert caught.value.message == ("--devices 4,5 but rank table {} lists devices 0,1,2,3 for this server "
                                    "(node_0)".format(given))
    assert caught.value.hint == "pass --devices 0,1,2,3"


def test_a_two_server_table_that_does_not_name_this_host_is_refused(tmp_path):
    table = template_1(server_id="other-host")
    table["server_count"] = "2"
    table["server_list"].append({"server_id": "third-host", "device": [
        {"device_id": str(d), "device_ip": "192.168.2.{}".format(d), "rank_id": str(8 + d)} for d in range(8)]})
    given = write_json(tmp_path / "given.json", table)
    with pytest.raises(UsageError, match="lists servers other-host, third-host; none is this host"):
        launch.ascend_ranks(Project(tmp_path / "p"), list(range(8)), str(given))


def test_ascend_ranks_picks_this_servers_ranks_from_a_two_server_table(tmp_path):
    """A table for two servers is what --rank-table is for; this host runs only its own ranks."""
    host = socket.gethostname()
    table = template_1(server_id="other-host")
    table["server_count"] = "2"
    table["server_list"].append({"server_id": host, "device": [
        {"device_id": str(d), "device_ip": "192.168.2.{}".format(d), "rank_id": str(8 + d)} for d in range(8)]})
    given = write_json(tmp_path / "given.json", table)
    try:
        path, ranks, host_ranks = launch.ascend_ranks(Project(tmp_path / "p"), list(range(8)), str(given))
    except MpltoolError:
        pytest.fail("a valid two-server table was refused")
    assert len(ranks) == 16
    assert host_ranks == [r for r in ranks if r["server_id"] == host]


# -- run_ascend -----------------------------------------------------------------------------------------------

SCRIPT = textwrap.dedent("""
    import json, os, signal, sys, time
    keys = ["RANK_TABLE_FILE", "RANK_SIZE", "RANK_ID", "ASCEND_DEVICE_ID", "DEVICE_ID", "JOB_ID"]
    rank = os.environ["RANK_ID"]
    seen = dict((k, os.environ.get(k)) for k in keys)
    seen["pid"] = os.getpid()
    out = os.path.join(os.environ["RANKTABLE_TEST_OUT"], rank + ".json")
    with open(out + ".tmp", "w") as f:
        json.dump(seen, f)
    os.rename(out + ".tmp", out)
    print("hello from rank " + rank)
    sys.stdout.flush()
    mode = os.environ.get("RANKTABLE_TEST_MODE", "ok")
    if mode == "fail":
        if rank == "3":
            print("error: boom")
            sys.exit(7)
        time.sleep(60)
    elif mode == "kill":
        if rank == "1":
            os.kill(os.getpid(), signal.SIGKILL)
        time.sleep(60)
""")


@pytest.fixture
def job(tmp_path, hccn_conf, monkeypatch):
    """An 8-device job on a generated table, its output folder, and the recorded fail_abandoned_stage calls."""
    project = Project(tmp_path / "p")
    calls = []
    # The real method is being added to Project; record the calls either way.
    monkeypatch.setattr(project, "fail_abandoned_stage", lambda stage, message, started_after=None: calls.append((stage, message)),
                        raising=False)
    out = tmp_path / "out"
    out.mkdir()
    monkeypatch.setenv("RANKTABLE_TEST_OUT", str(out))
    path, ranks, host_ranks = launch.ascend_ranks(project, list(range(8)), None, hccn_conf=str(hccn_conf))
    return project, path, ranks, host_ranks, out, calls


def _run(job, mode, monkeypatch):
    project, path, ranks, host_ranks, _, _ = job
    monkeypatch.setenv("RANKTABLE_TEST_MODE", mode)
    launch.run_ascend(project, path, ranks, host_ranks, [], command=[sys.executable, "-c", SCRIPT],
                      poll_seconds=0.05)


def _gone(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_run_ascend_gives_each_rank_its_environment(job, monkeypatch):
    """Every device's process must see its own rank and device and the same job and table."""
    project, path, _, _, out, calls = job
    _run(job, "ok", monkeypatch)
    seen = {int(f.name[:-len(".json")]): json.loads(f.read_text()) for f in out.glob("*.json")}
    assert sorted(seen) == list(range(8))
    job_ids = set(s["JOB_ID"] for s in seen.values())
    assert len(job_ids) == 1 and len(job_ids.pop()) == 8
    for rank in range(8):
        env = dict(seen[rank])
        del env["pid"]
        assert env == {"RANK_TABLE_FILE": str(path), "RANK_SIZE": "8", "RANK_ID": str(rank),
                       "ASCEND_DEVICE_ID": str(rank), "DEVICE_ID": str(rank), "JOB_ID": seen[0]["JOB_ID"]}
        assert project.path("logs/rank-{}.out".format(rank)).read_text() == "hello from rank {}\n".format(rank)
    assert calls == []


def test_run_ascend_stops_the_job_when_a_rank_fails(job, monkeypatch):
    """One dead rank leaves the others blocked in an all-reduce forever: stop them and name the dead one."""
    project, _, _, _, out, calls = job
    started = time.time()
    with pytest.raises(ToolFailedError) as caught:
        _run(job, "fail", monkeypatch)
    elapsed = time.time() - started
    message = "rank 3 of 8 failed (exit code 7): boom; the job was stopped"
    assert caught.value.message == message
    assert elapsed < 30, "the sleeping ranks were not stopped ({:.1f} s)".format(elapsed)
    assert calls == [("train", message)]
    assert project.path("logs/rank-3.out").read_text() == "hello from rank 3\nerror: boom\n"
    pids = [json.loads(f.read_text())["pid"] for f in out.glob("*.json")]
    assert [pid for pid in pids if not _gone(pid)] == []


def test_run_ascend_names_the_signal_that_killed_a_rank(job, monkeypatch):
    """A rank killed by the OOM killer leaves no error line: the signal is all the user gets."""
    _, _, _, _, _, calls = job
    started = time.time()
    with pytest.raises(ToolFailedError) as caught:
        _run(job, "kill", monkeypatch)
    assert time.time() - started < 30
    message = "rank 1 of 8 failed (killed by SIGKILL); the job was stopped"
    assert caught.value.message == message
    assert calls == [("train", message)]


# -- exit descriptions and horovodrun ----------------------------------------------------------------------


def test_describe_exit():
    """A negative code is a signal (Popen); 128+N is a shell's way of saying signal N."""
    assert launch.describe_exit(-9) == "killed by SIGKILL"
    assert launch.describe_exit(137) == "exit code 137 (SIGKILL)"
    assert launch.describe_exit(3) == "exit code 3"


def test_first_failure_is_the_first_reported():
    """The rank horovodrun reports first is the cause; the later ones were stopped because of it."""
    lines = ["[0]<stdout>:step 1", "[1]<stderr>:error: out of memory",
             "Process 1 exit with status code 137.", "Terminating remaining workers after failure of Process 1.",
             "Process 0 exit with status code 143."]
    assert launch.first_failure(lines) == (1, 137)
    assert launch.first_failure(["[0]<stdout>:step 1"]) is None


def test_check_nproc():
    """More processes than cores only with --oversubscribe; zero never."""
    cores = os.cpu_count()
    with pytest.raises(UsageError) as caught:
        launch.check_nproc(0, False)
    assert caught.value.message == "--nproc must be at least 1, got 0"
    with pytest.raises(UsageError) as caught:
        launch.check_nproc(cores + 1, False)
    assert caught.value.message == "--nproc {} is more processes than this host's {} cores".format(cores + 1, cores)
    assert launch.check_nproc(cores + 1, True) is None
    assert launch.check_nproc(cores, False) is None


def test_hccl_ranks_share_rank_0s_recipe_through_the_job_file(tmp_path, monkeypatch):
    """Under a cluster launcher every device's process resolves nothing itself: rank 0 writes its values to
    logs/launch-<JOB_ID>.json and the other ranks read them (waiting until they appear)."""
    from mpltool import parallel

    monkeypatch.setenv("RANK_SIZE", "2")
    monkeypatch.setenv("JOB_ID", "job42")
    monkeypatch.setenv("RANK_ID", "1")
    other = parallel.HcclReplicas(None)
    monkeypatch.setattr(parallel, "SHARE_TIMEOUT_SECONDS", 0.5)
    with pytest.raises(PrerequisiteError, match="rank 1 waited 0.5 s for rank 0's"):
        other.share_params(None, tmp_path)
    monkeypatch.setenv("RANK_ID", "0")
    chief = parallel.HcclReplicas(None)
    params = {"batch_size": 4, "replicas": 2, "model": "wrn-10-1"}
    assert chief.share_params(params, tmp_path) == params
    assert (tmp_path / "logs" / "launch-job42.json").is_file()
    assert other.share_params(None, tmp_path) == params
