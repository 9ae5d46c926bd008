"""Ascend rank tables: read and check one (template 1, or the legacy template 2), or write one for this
server from /etc/hccn.conf; and the environment of each device's process (docs/many-devices.md).

A rank table tells HCCL which devices take part and which rank each is. Template 1:
    {"status": "completed", "version": "1.0", "server_count": "1",
     "server_list": [{"server_id": "node_0", "device": [{"device_id": "0", "device_ip": "192.168.100.101",
                                                           "rank_id": "0"}, ...]}]}
Every value is a string; rank ids run 0..N-1, each once; a device id (0-7) appears once per server; a
server takes part with 1, 2, 4 or 8 devices. Template 2 (older CANN) has no rank ids: ranks follow the
order of `group_list[hccl_world_group].instance_list[].devices[]`.
"""

import json
import re
import socket
from pathlib import Path
from typing import Any, Dict, List, Sequence

from mpltool.errors import InvalidInputError, UsageError

HCCN_CONF = "/etc/hccn.conf"
DEVICES_PER_SERVER = 8
DEVICE_COUNTS = (1, 2, 4, 8)


def parse_devices(text: str) -> List[int]:
    """`0-7`, `0,1,2,3` or `4` -> device ids, checked (0-7, no repeats, 1/2/4/8 of them)."""
    devices = []  # type: List[int]
    for part in str(text).split(","):
        part = part.strip()
        match = re.match(r"^(\d+)(?:-(\d+))?$", part)
        if not match:
            raise UsageError("--devices {!r}: expected ids such as 0-7, 0,1,2,3 or 4".format(text))
        low, high = int(match.group(1)), int(match.group(2) or match.group(1))
        if high < low:
            raise UsageError("--devices {!r}: range {} runs backwards".format(text, part))
        devices.extend(range(low, high + 1))
    bad = [d for d in devices if not 0 <= d < DEVICES_PER_SERVER]
    if bad:
        raise UsageError("--devices {!r}: device {} is out of range 0-{}".format(text, bad[0], DEVICES_PER_SERVER - 1))
    if len(set(devices)) != len(devices):
        raise UsageError("--devices {!r}: a device is named twice".format(text))
    if len(devices) not in DEVICE_COUNTS:
        raise UsageError("--devices {!r}: {} devices; one server trains on 1, 2, 4 or 8".format(text, len(devices)))
    return devices


def read_hccn_conf(path=HCCN_CONF) -> Dict[int, str]:
    """device id -> device IP from hccn.conf's `address_<id>=<ip>` lines."""
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise InvalidInputError("cannot read {} ({}): it gives each device's IP".format(path, exc.strerror or exc),
                                hint="configure the devices with hccn_tool, or pass --rank-table FILE")
    addresses = {}
    for line in text.splitlines():
        match = re.match(r"^\s*address_(\d+)\s*=\s*(\S+)\s*$", line)
        if match:
            addresses[int(match.group(1))] = match.group(2)
    return addresses


def build_rank_table(devices: Sequence[int], addresses: Dict[int, str], server_id: str) -> Dict[str, Any]:
    """Template 1 for one server, ranks in the order of `devices`."""
    missing = [d for d in devices if d not in addresses]
    if missing:
        raise InvalidInputError("no address_{} line in hccn.conf for device {}".format(missing[0], missing[0]),
                                hint="configure it with `hccn_tool -i {} -ip -s address ...`, or pass --rank-table".format(
                                    missing[0]))
    return {"status": "completed", "version": "1.0", "server_count": "1",
            "server_list": [{"server_id": server_id, "device": [
                {"device_id": str(d), "device_ip": addresses[d], "rank_id": str(rank)}
                for rank, d in enumerate(devices)]}]}


def _fail(path, message):
    raise InvalidInputError("rank table {}: {}".format(path, message))


def _number(path, value, what):
    if not isinstance(value, str) or not re.match(r"^\d+$", value):
        _fail(path, "{} must be a string of digits, got {!r}".format(what, value))
    return int(value)


def load_rank_table(path) -> List[Dict[str, Any]]:
    """The ranks of a rank table file, checked: [{rank, server_id, device_id, device_ip}] by rank."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise InvalidInputError("cannot read rank table {}: {}".format(path, exc.strerror or exc))
    except ValueError as exc:
        _fail(path, "not JSON ({})".format(exc))
    if not isinstance(data, dict):
        _fail(path, "expected a JSON object")
    ranks = _template_2(path, data) if "group_list" in data else _template_1(path, data)
    for server in sorted(set(r["server_id"] for r in ranks)):
        on_server = [r["device_id"] for r in ranks if r["server_id"] == server]
        if len(set(on_server)) != len(on_server):
            _fail(path, "server {} lists a device twice".format(server))
        if len(on_server) not in DEVICE_COUNTS:
            _fail(path, "server {} has {} devices; a server takes part with 1, 2, 4 or 8".format(server, len(on_server)))
    return ranks


def _device(path, entry, where):
    if not isinstance(entry, dict):
        _fail(path, "{}: a device must be an object".format(where))
    device_id = _number(path, entry.get("device_id"), where + " device_id")
    if device_id >= DEVICES_PER_SERVER:
        _fail(path, "{}: device_id {} is out of range 0-{}".format(where, device_id, DEVICES_PER_SERVER - 1))
    ip = entry.get("device_ip")
    if not isinstance(ip, str) or not ip:
        _fail(path, "{}: device {} has no device_ip".format(where, device_id))
    return device_id, ip


def _template_1(path, data):
    if data.get("status") != "completed":
        _fail(path, "status is {!r}, not 'completed'".format(data.get("status")))
    servers = data.get("server_list")
    if not isinstance(servers, list) or not servers:
        _fail(path, "server_list must be a non-empty list")
    count = _number(path, data.get("server_count"), "server_count")
    if count != len(servers):
        _fail(path, "server_count is {} but server_list has {} servers".format(count, len(servers)))
    ranks = []
    for index, server in enumerate(servers):
        if not isinstance(server, dict):
            _fail(path, "server_list entry {} must be an object".format(index))
        server_id = server.get("server_id")
        if not isinstance(server_id, str) or not server_id:
            _fail(path, "server {} has no server_id string".format(index))
        if not isinstance(server.get("device"), list) or not server["device"]:
            _fail(path, "server {} lists no devices".format(server_id))
        for entry in server["device"]:
            device_id, ip = _device(path, entry, "server {}".format(server_id))
            rank = _number(path, entry.get("rank_id"), "server {} device {} rank_id".format(server_id, device_id))
            ranks.append({"rank": rank, "server_id": server_id, "device_id": device_id, "device_ip": ip})
    ids = sorted(r["rank"] for r in ranks)
    duplicated = sorted(set(i for i in ids if ids.count(i) > 1))
    if duplicated:
        _fail(path, "rank_id {} appears more than once".format(duplicated[0]))
    if ids != list(range(len(ids))):
        _fail(path, "rank ids must be 0..{} without gaps, got {}".format(len(ids) - 1, ids))
    return sorted(ranks, key=lambda r: r["rank"])


def _template_2(path, data):
    groups = data.get("group_list")
    if not isinstance(groups, list) or not groups:
        _fail(path, "group_list must be a non-empty list")
    world = [g for g in groups if isinstance(g, dict) and g.get("group_name") == "hccl_world_group"] or groups[:1]
    instances = world[0].get("instance_list") if isinstance(world[0], dict) else None
    if not isinstance(instances, list) or not instances:
        _fail(path, "the group has no instance_list")
    ranks = []
    for instance in instances:
        server_id = str((instance or {}).get("server_id") or "")
        if not server_id:
            _fail(path, "instance {} has no server_id".format((instance or {}).get("pod_name")))
        for entry in instance.get("devices") or []:
            device_id, ip = _device(path, entry, "server {}".format(server_id))
            ranks.append({"rank": len(ranks), "server_id": server_id, "device_id": device_id, "device_ip": ip})
    declared = world[0].get("device_count")
    if declared is not None and _number(path, declared, "device_count") != len(ranks):
        _fail(path, "device_count is {} but the instances list {} devices".format(declared, len(ranks)))
    return ranks


def this_server(ranks, path) -> str:
    """The server_id of this host in a checked table: the only server, or the one named by this host's
    name or address (Ascend tables usually use the host IP)."""
    servers = sorted(set(r["server_id"] for r in ranks))
    if len(servers) == 1:
        return servers[0]
    names = {socket.gethostname()}
    try:
        names.add(socket.gethostbyname(socket.gethostname()))
    except OSError:
        pass
    mine = [s for s in servers if s in names]
    if not mine:
        raise UsageError("rank table {} lists servers {}; none is this host ({})".format(
            path, ", ".join(servers), ", ".join(sorted(names))),
            hint="run mpltool on each server named in the table, or use a table that names this host")
    return mine[0]


def rank_environment(rank: Dict[str, Any], size: int, rank_table: str, job_id: str) -> Dict[str, str]:
    """What one device's process needs (DEVICE_ID too, for code older than ASCEND_DEVICE_ID)."""
    return {"RANK_TABLE_FILE": str(rank_table), "RANK_SIZE": str(size), "RANK_ID": str(rank["rank"]),
            "ASCEND_DEVICE_ID": str(rank["device_id"]), "DEVICE_ID": str(rank["device_id"]), "JOB_ID": str(job_id)}
