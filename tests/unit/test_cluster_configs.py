"""The Ray cluster launcher files (every cluster*.yaml in the repository root), checked offline.

Each file must pass Ray's own validation, the same `prepare_config` + `validate_config` that `ray up` runs before it
contacts a cloud: merge with the provider's defaults.yaml, then check against ray-schema.json. Neither imports boto3
or the Google API client, so nothing here needs cloud credentials, the network or a running Ray.

Then the properties the cluster files promise, checked on the merged config (what `ray up` really runs: a file that
leaves out head_start_ray_commands gets Ray's default, which binds the dashboard to 0.0.0.0):
  (a) nothing is open to the world but SSH: the dashboard binds to localhost, no ingress rule opens another port;
  (b) head and workers share one private network: one zone, the same subnet and security group / network,
      and on GCP no external address on a worker;
  (c) results go to a bucket every node exports and may write, not to a node's own disk;
  (d) no trials on the head (CPU 0), GPU workers scale from zero;
  (e) every node gets the project and builds its venv with scripts/setup_env.sh, and Ray runs from that venv.
`cluster_problems` returns one line per broken property; each property is shown to be caught on a broken copy.
"""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from ray.autoscaler._private.util import prepare_config, validate_config
from repo_paths import ROOT

CLUSTER_FILES = sorted(ROOT.glob("cluster*.yaml"))

PROJECT_DIRS = ("~/osrtune", "$HOME/osrtune")
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}
STORAGE_SCHEME = {"aws": "s3://", "gcp": "gs://"}
GCS_WRITE_SCOPES = {
    "https://www.googleapis.com/auth/devstorage.read_write",
    "https://www.googleapis.com/auth/devstorage.full_control",
    "https://www.googleapis.com/auth/cloud-platform",
}

DASHBOARD_HOST = re.compile(r"--dashboard-host[= ]+['\"]?([^\s'\";]+)")
STORAGE_EXPORT = re.compile(r"export\s+OSRTUNE_STORAGE_PATH=['\"]?([^\s'\";]+)")
# A call of the `ray` executable: a token that is `ray` or ends in `/ray`, followed by its arguments.
RAY_CALL = re.compile(r"(?:^|[\s;&|(])(\S*/)?ray(?=\s)")
SETUP_ENV = re.compile(r"cd\s+(\S+?)/?\s*&&\s*(?:bash|source|\.)\s+(?:\./)?scripts/setup_env\.sh\b")

# Paths that must not reach the nodes (relative to the repository root, as rsync sees them).
NOT_SHIPPED = [
    ".venv/bin/python",
    ".git/HEAD",
    "results/difair-c10/optuna.db",
    "bench/out/overhead.csv",
    "data/MNIST/raw/train-images-idx3-ubyte",
    "data/cifar-10-python.tar.gz",
    "data/cifar-10-batches-py/data_batch_1",
    "data/cifar-100-python/train",
    "data/train_32x32.mat",
    "data/tiny-imagenet-200.zip",
    "data/tiny-imagenet-200/wnids.txt",
]
ALWAYS_SHIPPED = [
    "requirements.txt",
    "scripts/setup_env.sh",
    "search/run.py",
    "data/pools.py",
    "data/splits/standard.json",
]


def tracked_files() -> list[str]:
    """Every file git tracks (the project as a node must see it), or a fixed sample outside a git checkout."""
    if shutil.which("git") and (ROOT / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
        return sorted(set(ALWAYS_SHIPPED) | {p for p in out.decode().split("\0") if p})
    return ALWAYS_SHIPPED


SHIPPED = tracked_files()


def load_raw(path: Path) -> dict:
    return yaml.safe_load(path.read_text())


def prepared(raw: dict) -> dict:
    """The config `ray up` works with: the file merged with Ray's defaults for its provider, then schema-checked."""
    config = prepare_config(copy.deepcopy(raw))
    validate_config(config)
    return config


# --- rsync's exclude rules (rsync(1), "PATTERN MATCHING RULES"), enough to check rsync_exclude -------------------

def _wildcards_to_regex(pattern: str) -> str:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            continue
        ch = pattern[i]
        if ch == "*":
            out.append("[^/]*")
        elif ch == "?":
            out.append("[^/]")
        elif ch == "[" and (end := pattern.find("]", i + 2)) > 0:
            body = pattern[i + 1:end]
            out.append("[" + ("^" + body[1:] if body.startswith("!") else body) + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)


def rsync_excludes(path: str, patterns: list[str]) -> bool:
    """Whether `rsync --exclude PATTERN …` leaves out the file `path` (relative to the transfer root).

    rsync tests each directory on the way down before entering it, so an excluded parent excludes the file. A pattern
    with a leading "/" is anchored at the transfer root; one with another "/" must match the end of the path at a
    component boundary; one without "/" matches the last component; a trailing "/" matches directories only.
    """
    parts = path.split("/")
    for n in range(1, len(parts) + 1):
        here, name, is_dir = "/".join(parts[:n]), parts[n - 1], n < len(parts)
        for pattern in patterns:
            if pattern.endswith("/") and not is_dir:
                continue
            body = pattern.rstrip("/")
            if body.startswith("/"):
                hit = re.fullmatch(_wildcards_to_regex(body[1:]), here)
            elif "/" in body or "**" in body:
                hit = re.fullmatch("(?:.*/)?" + _wildcards_to_regex(body), here)
            else:
                hit = re.fullmatch(_wildcards_to_regex(body), name)
            if hit:
                return True
    return False


def test_rsync_rules_as_rsync_applies_them():
    assert rsync_excludes("data/splits/standard.json", ["data/*/"])  # unanchored: the draft's rule took the splits
    assert not rsync_excludes("data/pools.py", ["data/*/"])  # a file, not a directory
    assert rsync_excludes("x/.venv/lib/a.py", [".venv"])
    assert not rsync_excludes("x/.venv/lib/a.py", ["/.venv"])
    assert rsync_excludes("data/cifar-100-python/meta", ["/data/cifar-*"])
    assert not rsync_excludes("results_analysis/metrics.py", ["/results"])
    assert rsync_excludes("data/s/x", ["/data/[!a]*/"]) and not rsync_excludes("data/a/x", ["/data/[!a]*/"])


# --- the safety checker ------------------------------------------------------------------------------------------

def _node_types(config: dict) -> tuple[str, dict, dict[str, dict]]:
    types = config["available_node_types"]
    head_name = config["head_node_type"]
    return head_name, types[head_name], {name: t for name, t in types.items() if name != head_name}


def _all_commands(config: dict) -> list[str]:
    keys = ("initialization_commands", "setup_commands", "head_setup_commands", "worker_setup_commands",
            "head_start_ray_commands", "worker_start_ray_commands")
    commands = [c for k in keys for c in config.get(k) or []]
    for node_type in config["available_node_types"].values():
        for k in ("initialization_commands", "worker_setup_commands"):
            commands += node_type.get(k) or []
    return commands


def _setup_commands_per_node(config: dict) -> dict[str, list[str]]:
    """The setup commands each node type really runs (a node type's own worker_setup_commands replace the global ones)."""
    head_name, _, workers = _node_types(config)
    per_node = {head_name: list(config.get("head_setup_commands") or [])}
    for name, node_type in workers.items():
        per_node[name] = list(node_type.get("worker_setup_commands", config.get("worker_setup_commands")) or [])
    return per_node


def _project_dirs(config: dict) -> set[str]:
    user = (config.get("auth") or {}).get("ssh_user", "ubuntu")
    return {*PROJECT_DIRS, f"/home/{user}/osrtune"}


def _check_dashboard_and_ingress(config: dict) -> list[str]:
    found = []
    for command in _all_commands(config):
        found += [f"(a) dashboard bound to {host}, not localhost: {command!r}"
                  for host in DASHBOARD_HOST.findall(command) if host not in LOCAL_HOSTS]
    # A `ray start --head` without --dashboard-host is fine: `ray start`'s default is localhost
    # (ray/scripts/scripts.py: default=get_localhost_ip()).
    if not any(re.search(r"\bray\s+start\b", c) and "--head" in c for c in config.get("head_start_ray_commands") or []):
        found.append("(a) no `ray start --head` among head_start_ray_commands")
    for rule in (config["provider"].get("security_group") or {}).get("IpPermissions") or []:
        world = any(r.get("CidrIp") == "0.0.0.0/0" for r in rule.get("IpRanges") or []) or any(
            r.get("CidrIpv6") == "::/0" for r in rule.get("Ipv6Ranges") or [])
        ssh_only = (str(rule.get("IpProtocol")).lower() in ("tcp", "6")
                    and rule.get("FromPort") == 22 and rule.get("ToPort") == 22)
        if world and not ssh_only:
            found.append(f"(a) ingress rule open to the world beyond TCP 22: {rule}")
    return found


def _same(values: list, what: str) -> list[str]:
    distinct = {json.dumps(v, sort_keys=True) for v in values}
    return [] if len(distinct) <= 1 else [f"(b) node types differ in {what}: {sorted(distinct)}"]


def _check_network(config: dict) -> list[str]:
    provider = config["provider"]
    head_name, head, workers = _node_types(config)
    types = {head_name: head, **workers}
    zones = [z.strip() for z in str(provider.get("availability_zone") or "").split(",") if z.strip()]
    found = [] if len(zones) == 1 else [f"(b) availability_zone must be one zone, not {zones}"]
    if provider["type"] == "aws":
        for field in ("SubnetIds", "SecurityGroupIds", "NetworkInterfaces"):
            given = [t["node_config"][field] for t in types.values() if field in t["node_config"]]
            if given and len(given) != len(types):
                found.append(f"(b) {field} set for some node types only: Ray would choose the others' itself")
            found += _same(given, field)
    elif provider["type"] == "gcp":
        if zones and not zones[0].startswith(f"{provider.get('region')}-"):
            found.append(f"(b) zone {zones[0]} is not in region {provider.get('region')}")
        interfaces = {}
        for name, node_type in types.items():
            nics = node_type["node_config"].get("networkInterfaces")
            if not nics:
                found.append(f"(b) {name}: no networkInterfaces (Ray would pick a subnet and an external address)")
                continue
            interfaces[name] = [(nic.get("network"), nic.get("subnetwork")) for nic in nics]
            if name != head_name and any(nic.get("accessConfigs") for nic in nics):
                found.append(f"(b) worker type {name} has an external address (accessConfigs)")
        found += _same(list(interfaces.values()), "network/subnetwork")
    else:
        found.append(f"(b) provider {provider['type']!r}: no network check written for it")
    return found


def _check_storage(config: dict) -> list[str]:
    provider = config["provider"]["type"]
    found, exported = [], set()
    for name, commands in _setup_commands_per_node(config).items():
        values = {v for c in commands for v in STORAGE_EXPORT.findall(c)}
        if len(values) != 1:
            found.append(f"(c) {name} exports OSRTUNE_STORAGE_PATH {len(values)} times, not once: {sorted(values)}")
        exported |= values
    if len(exported) > 1:
        found.append(f"(c) nodes export different storage paths: {sorted(exported)}")
    for uri in exported:
        if not re.fullmatch(r"(s3|gs)://[^/\s]+(/\S*)?", uri):
            found.append(f"(c) OSRTUNE_STORAGE_PATH={uri} is not an s3:// or gs:// URI (a path is each node's own disk)")
        elif provider in STORAGE_SCHEME and not uri.startswith(STORAGE_SCHEME[provider]):
            found.append(f"(c) OSRTUNE_STORAGE_PATH={uri} on {provider}: expected {STORAGE_SCHEME[provider]}…")
    head_name, head, workers = _node_types(config)
    if provider == "aws":
        # Without IamInstanceProfile Ray gives its own (S3 included) to the head only: a worker would have no credentials.
        found += [f"(c) worker type {name} has no IamInstanceProfile: its trials cannot write to S3"
                  for name, t in workers.items() if "IamInstanceProfile" not in t["node_config"]]
    elif provider == "gcp":
        # Without serviceAccounts Ray gives the head its own (cloud-platform scope); workers need one declared.
        for name, node_type in {head_name: head, **workers}.items():
            accounts = node_type["node_config"].get("serviceAccounts")
            if accounts is None and name == head_name:
                continue
            scopes = {s for a in accounts or [] for s in a.get("scopes") or []}
            if not scopes & GCS_WRITE_SCOPES:
                found.append(f"(c) {name}: no service account with a scope that writes Cloud Storage")
    return found


def _check_placement(config: dict) -> list[str]:
    _, head, workers = _node_types(config)
    found = []
    if (head.get("resources") or {}).get("CPU") != 0:
        found.append(f"(d) head resources {head.get('resources')}: CPU must be 0 so that no trial runs on the head")
    found += [f"(d) worker type {name}: min_workers {t.get('min_workers')}, not 0"
              for name, t in workers.items() if t.get("min_workers", 0) != 0]
    if not any((t.get("resources") or {}).get("GPU", 0) >= 1 for t in workers.values()):
        found.append("(d) no worker type declares a GPU: the autoscaler would never start one for a GPU trial")
    return found


def _check_venv_and_setup(config: dict, shipped: list[str]) -> list[str]:
    found = []
    dirs = _project_dirs(config)
    venv_ray = {f"{d}/.venv/bin/ray" for d in dirs}
    for key in ("head_start_ray_commands", "worker_start_ray_commands"):
        commands = config.get(key) or []
        for command in commands:
            for prefix in RAY_CALL.findall(command):
                if f"{prefix}ray" not in venv_ray:
                    found.append(f"(e) {key}: `{prefix}ray` is not the project's venv (~/osrtune/.venv/bin/ray): "
                                 f"{command!r}")
        if not any(re.search(r"\bray\s+start\b", c) for c in commands):
            found.append(f"(e) {key}: no `ray start`")
    for name, commands in _setup_commands_per_node(config).items():
        if not any((m := SETUP_ENV.search(c)) and m.group(1) in dirs for c in commands):
            found.append(f"(e) {name}: setup never runs `cd ~/osrtune && bash scripts/setup_env.sh`")
    mounts = config.get("file_mounts") or {}
    if not any(mounts.get(d) in (".", "./") for d in dirs):
        found.append(f"(e) file_mounts does not ship the repository ('.') to ~/osrtune: {mounts}")
    excludes = config.get("rsync_exclude") or []
    found += [f"(e) rsync_exclude drops {p}, which the nodes need" for p in shipped if rsync_excludes(p, excludes)]
    found += [f"(e) rsync_exclude lets {p} through to the nodes" for p in NOT_SHIPPED if not rsync_excludes(p, excludes)]
    return found


def cluster_problems(config: dict, shipped: list[str] = SHIPPED) -> list[str]:
    """One line per broken property (a)–(e) of a prepared cluster config; [] when it is safe."""
    return (_check_dashboard_and_ingress(config) + _check_network(config) + _check_storage(config)
            + _check_placement(config) + _check_venv_and_setup(config, shipped))


# --- the files ---------------------------------------------------------------------------------------------------

def _provider_file(provider: str) -> Path:
    matches = [p for p in CLUSTER_FILES if load_raw(p)["provider"]["type"] == provider]
    assert matches, f"no cluster*.yaml for {provider}"
    return matches[0]


def test_an_aws_and_a_gcp_cluster_file():
    assert len(CLUSTER_FILES) >= 2, CLUSTER_FILES
    assert {load_raw(p)["provider"]["type"] for p in CLUSTER_FILES} >= {"aws", "gcp"}


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_ray_accepts_the_file(path):
    prepared(load_raw(path))  # raises on a schema violation


@pytest.mark.parametrize("path", CLUSTER_FILES, ids=lambda p: p.name)
def test_safety_properties(path):
    assert cluster_problems(prepared(load_raw(path))) == []


# --- each property fails when broken -----------------------------------------------------------------------------

def _head(raw: dict) -> dict:
    return raw["available_node_types"][raw["head_node_type"]]


def _worker(raw: dict) -> dict:
    return next(t for name, t in raw["available_node_types"].items() if name != raw["head_node_type"])


def _replace_in(raw: dict, key: str, old: str, new: str) -> None:
    assert any(old in c for c in raw[key]), (key, old)
    raw[key] = [c.replace(old, new) for c in raw[key]]


def _storage_on_head_only(raw: dict) -> None:
    line = next(c for c in raw["setup_commands"] if "OSRTUNE_STORAGE_PATH=" in c)
    raw["setup_commands"].remove(line)
    raw["head_setup_commands"] = [line, *raw.get("head_setup_commands", [])]


def _storage_local(raw: dict) -> None:
    raw["setup_commands"] = [re.sub(r"OSRTUNE_STORAGE_PATH=\S+?'", "OSRTUNE_STORAGE_PATH=/home/ubuntu/results'", c)
                             for c in raw["setup_commands"]]


def _open_port(raw: dict, protocol: str, port: int) -> None:
    raw["provider"]["security_group"] = {"GroupName": "osrtune", "IpPermissions": [
        {"IpProtocol": protocol, "FromPort": port, "ToPort": port, "IpRanges": [{"CidrIp": "0.0.0.0/0"}]}]}


BOTH: list[tuple[str, Callable[[dict], None], str]] = [
    ("dashboard on 0.0.0.0",
     lambda r: _replace_in(r, "head_start_ray_commands", "--dashboard-host=127.0.0.1", "--dashboard-host=0.0.0.0"), "(a)"),
    ("Ray's default head start (0.0.0.0)", lambda r: r.pop("head_start_ray_commands"), "(a)"),
    ("storage on a local path", _storage_local, "(c)"),
    ("storage exported on the head only", _storage_on_head_only, "(c)"),
    ("trials allowed on the head", lambda r: _head(r).update(resources={"CPU": 4}), "(d)"),
    ("head CPUs left to detection", lambda r: _head(r).update(resources={}), "(d)"),
    ("a GPU worker always up", lambda r: _worker(r).update(min_workers=1), "(d)"),
    ("workers without a GPU", lambda r: _worker(r)["resources"].pop("GPU"), "(d)"),
    ("workers start the system ray",
     lambda r: _replace_in(r, "worker_start_ray_commands", "~/osrtune/.venv/bin/ray start", "ray start"), "(e)"),
    ("head stops the system ray",
     lambda r: _replace_in(r, "head_start_ray_commands", "~/osrtune/.venv/bin/ray stop", "ray stop"), "(e)"),
    ("setup without setup_env.sh",
     lambda r: r.update(setup_commands=[c for c in r["setup_commands"] if "setup_env.sh" not in c]), "(e)"),
    ("project not shipped", lambda r: r.update(file_mounts={}), "(e)"),
    ("rsync drops data/splits", lambda r: r["rsync_exclude"].append("data/*/"), "(e)"),
    ("rsync ships the local venv", lambda r: r["rsync_exclude"].remove("/.venv"), "(e)"),
]
AWS_ONLY: list[tuple[str, Callable[[dict], None], str]] = [
    ("dashboard port open to the world", lambda r: _open_port(r, "tcp", 8265), "(a)"),
    ("all traffic open to the world", lambda r: _open_port(r, "-1", -1), "(a)"),
    ("two availability zones", lambda r: r["provider"].update(availability_zone="us-east-1a,us-east-1b"), "(b)"),
    ("subnet on the head only", lambda r: _head(r)["node_config"].update(SubnetIds=["subnet-1"]), "(b)"),
    ("different subnets", lambda r: (_head(r)["node_config"].update(SubnetIds=["subnet-1"]),
                                     _worker(r)["node_config"].update(SubnetIds=["subnet-2"])), "(b)"),
    ("different security groups", lambda r: (_head(r)["node_config"].update(SecurityGroupIds=["sg-1"]),
                                             _worker(r)["node_config"].update(SecurityGroupIds=["sg-2"])), "(b)"),
    ("storage on GCS from AWS", lambda r: _replace_in(r, "setup_commands", "=s3://", "=gs://"), "(c)"),
    ("workers without an instance profile", lambda r: _worker(r)["node_config"].pop("IamInstanceProfile"), "(c)"),
]
GCP_ONLY: list[tuple[str, Callable[[dict], None], str]] = [
    ("worker with an external address",
     lambda r: _worker(r)["node_config"]["networkInterfaces"][0].update(accessConfigs=[{"type": "ONE_TO_ONE_NAT"}]), "(b)"),
    ("worker on another subnetwork",
     lambda r: _worker(r)["node_config"]["networkInterfaces"][0].update(subnetwork="regions/us-central1/subnetworks/x"),
     "(b)"),
    ("worker network left to Ray", lambda r: _worker(r)["node_config"].pop("networkInterfaces"), "(b)"),
    ("zone outside the region", lambda r: r["provider"].update(availability_zone="europe-west4-a"), "(b)"),
    ("workers may only read the bucket",
     lambda r: _worker(r)["node_config"]["serviceAccounts"][0].update(
         scopes=["https://www.googleapis.com/auth/devstorage.read_only"]), "(c)"),
]
BREAKAGES = ([pytest.param(p, f, tag, id=f"{p}: {what}") for p in ("aws", "gcp") for what, f, tag in BOTH]
             + [pytest.param("aws", f, tag, id=f"aws: {what}") for what, f, tag in AWS_ONLY]
             + [pytest.param("gcp", f, tag, id=f"gcp: {what}") for what, f, tag in GCP_ONLY])


@pytest.mark.parametrize("provider, breakage, tag", BREAKAGES)
def test_a_broken_copy_is_reported(provider, breakage, tag):
    raw = load_raw(_provider_file(provider))
    breakage(raw)
    problems = cluster_problems(prepared(raw))
    assert any(p.startswith(tag) for p in problems), problems
