"""Running on a Ray cluster: cluster.yaml, --storage, GPU placement, secrets, and a real two-node cluster.

The integration tests start two Ray nodes on this machine with `ray start --block` (a head and a
worker node, one CPU each, each with its own temp dir, ports and token-authenticated GCS), run
`python -m harness.ablate --address` against them, and stop a node the way `ray stop` would, but
only that node's processes: `ray stop` itself kills every Ray process of the machine, other test
runs' included. Every process a test starts is ended by its process id in a fixture finaliser.
"""

from __future__ import annotations

import copy
import json
import math
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from harness import ablate
from harness.experiment import settings as experiment_settings
from harness.tune import trainable

ROOT = Path(__file__).resolve().parents[2]
PY = sys.executable
RAY = str(Path(sys.executable).with_name("ray"))
CLUSTER_YAML = ROOT / "cluster.yaml"
READY = "Ray runtime started."
NODE_MARK = "FSNET_TEST_RAY_NODE"  # set in each node's environment (its temp dir): every process it starts inherits it
REPORT_DELAY = 0.4  # seconds each trial sleeps after a periodic report (FSNET_TEST_REPORT_DELAY)


# ------------------------------------------------------------------ cluster.yaml (offline)
def _local_block(text: str) -> dict[str, Any]:
    """The commented on-premises alternative of cluster.yaml, uncommented and parsed."""
    block = text.split("# BEGIN local-provider\n", 1)[1].split("# END local-provider", 1)[0]
    return yaml.safe_load("\n".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                                    for line in block.splitlines()))


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to open a network connection fails the test."""
    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("cluster.yaml validation tried to use the network")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_cluster_yaml_passes_rays_own_validation_offline(no_network: None) -> None:
    from ray.autoscaler._private.util import prepare_config, validate_config

    config = yaml.safe_load(CLUSTER_YAML.read_text())
    full = prepare_config(copy.deepcopy(config))  # what `ray up` does before it touches the cloud
    validate_config(full)
    assert full["provider"]["type"] == "aws" and full["provider"]["region"]
    nodes = full["available_node_types"]
    head, workers = nodes[full["head_node_type"]], [v for k, v in nodes.items() if k != full["head_node_type"]]
    assert head["node_config"]["InstanceType"].startswith("m6i")
    assert len(workers) == 1 and workers[0]["node_config"]["InstanceType"].startswith("g5")
    assert workers[0]["min_workers"] == 0 and workers[0]["max_workers"] >= 1 and workers[0]["resources"]["GPU"] == 1
    assert "/home/ubuntu/fsnet-harness" in full["file_mounts"]
    setup = "\n".join(full["setup_commands"])
    assert "pip install" in setup and "-e ~/fsnet-harness" in setup and "constraints-cpu" not in setup
    assert any("ray start --head" in c for c in full["head_start_ray_commands"])
    assert any("ray start --address=$RAY_HEAD_IP" in c for c in full["worker_start_ray_commands"])
    text = CLUSTER_YAML.read_text()
    assert re.search(r"ray (exec|submit) .*python -m harness\.ablate --space ultra --address auto .*"
                     r"--storage s3://BUCKET/fsnet --results /home/ubuntu/results", text)
    assert re.search(r"ray submit .*harness/ablate.py -- --space ultra --address auto", text)

    local = _local_block(text)  # the commented on-premises alternative validates too
    assert local["provider"]["type"] == "local" and local["provider"]["head_ip"] and local["provider"]["worker_ips"]
    validate_config(prepare_config(copy.deepcopy(local)))

    broken = copy.deepcopy(full)
    broken["available_node_types"]["gpu_worker"]["resources"] = {"GPU": 0.5}  # the schema wants integers
    with pytest.raises(Exception, match="0.5"):
        validate_config(broken)


CREDENTIAL_PATTERNS = [
    re.compile(r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),  # AWS access key id
    re.compile(r"(?i)aws_secret_access_key\s*[:=]"),
    re.compile(r"(?i)(wandb_api_key|ray_auth_token|password|secret_?key|api_?key|token)\s*[:=]\s*['\"]?[A-Za-z0-9/+_-]{16,}"),
    re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----"),
    re.compile(r"\b[0-9a-f]{40}\b"),  # a W&B key's shape
    re.compile(r"(?<![A-Za-z0-9/+])[A-Za-z0-9/+]{40}(?![A-Za-z0-9/+])"),  # an AWS secret key's shape
]


def _credentials_in(text: str) -> list[str]:
    return [m.group(0) for pattern in CREDENTIAL_PATTERNS for m in pattern.finditer(text)]


def test_cluster_yaml_holds_no_credential() -> None:
    assert _credentials_in("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY") != []  # the scan bites
    assert _credentials_in("WANDB_API_KEY=0123456789abcdef0123456789abcdef01234567") != []
    text = CLUSTER_YAML.read_text()
    assert _credentials_in(text) == []
    for name in ("AWS_SECRET_ACCESS_KEY", "AWS_ACCESS_KEY_ID", "WANDB_API_KEY", "RAY_AUTH_TOKEN"):
        value = os.environ.get(name)
        if value:
            assert value not in text, name
    assert "secretsmanager get-secret-value" in text  # secrets are fetched on the nodes, not written here


# ------------------------------------------------------------------ --storage and GPU placement (no Ray)
@pytest.mark.parametrize("storage", ["s3://bucket/fsnet", "gs://bucket/a/b", "file:///tmp/x", "/tmp/x", "rel/dir"])
def test_storage_accepts_paths_and_cloud_uris(storage: str) -> None:
    experiment_settings.check_storage(storage)


@pytest.mark.parametrize(("storage", "message"), [("ftp://host/x", "unsupported URI scheme 'ftp'"),
                                                   ("s3://", "names no bucket")])
def test_storage_rejects_what_pyarrow_cannot_open(storage: str, message: str, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    status = ablate.main(["--space", "advanced", "--storage", storage, "--results", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert status == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "r").exists()


def test_a_cloud_storage_uri_is_kept_as_is_and_results_stay_local(tmp_path: Path) -> None:
    from harness.tune.tuner import ray_experiment_path, storage_uri

    args = ablate.build_parser().parse_args(["--space", "advanced", "--storage", "s3://bucket/fsnet/",
                                             "--results", str(tmp_path / "r"), "--experiment", "e"])
    settings = experiment_settings.settings_from_args(args)
    assert settings["storage"] == "s3://bucket/fsnet/" and storage_uri(settings["storage"]) == "s3://bucket/fsnet/"
    assert ray_experiment_path(settings["storage"], "e") == "s3://bucket/fsnet/e"
    local = experiment_settings.experiment_folder(str(tmp_path / "r"), "e")
    assert local == tmp_path / "r" / "e"  # trials.parquet: local


@pytest.mark.parametrize(("gpu_ids", "cuda", "device"), [([], True, "cpu"), ([], False, "cpu"), ([0], True, "cuda"),
                                                         (["3"], True, "cuda"), ([1], False, "cpu")])
def test_device_follows_the_gpus_ray_assigned(gpu_ids: list, cuda: bool, device: str,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trainable.ray, "get_gpu_ids", lambda: gpu_ids)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: cuda)
    assert trainable.trial_device() == device


# ------------------------------------------------------------------ a two-node cluster on this machine
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Node:
    """One `ray start --block` process (the leader of its own process group) and its temp dir."""

    name: str
    proc: subprocess.Popen
    temp_dir: Path
    log: Path
    node_id: str = ""
    seen: dict[int, float] = field(default_factory=dict)  # pid -> create_time of every process seen

    def _ours(self, p: psutil.Process) -> bool:
        """Started by this node: seen in its tree before, in its process group, or carrying its NODE_MARK."""
        return (self.seen.get(p.pid) == p.create_time() or os.getpgid(p.pid) == self.proc.pid
                or p.environ().get(NODE_MARK) == str(self.temp_dir))

    def tree(self) -> list[psutil.Process]:
        """The node's live processes: the `ray start` process and its descendants, and every process it
        started that left the tree (Ray workers get process groups of their own; orphans move to init)."""
        found: dict[int, psutil.Process] = {}
        try:
            top = psutil.Process(self.proc.pid)
            found.update((p.pid, p) for p in [top, *top.children(recursive=True)])
        except psutil.NoSuchProcess:
            pass
        for p in psutil.process_iter():
            try:
                if p.pid not in found and self._ours(p):
                    found[p.pid] = p
            except (ProcessLookupError, psutil.Error, OSError):
                continue
        for pid, p in list(found.items()):
            try:
                self.seen.setdefault(pid, p.create_time())
            except psutil.Error:
                found.pop(pid)
        return list(found.values())

    def stop(self, grace: float = 5.0) -> None:
        """What `ray stop` does, for this node only: SIGTERM every process, SIGKILL what is left after `grace`."""
        procs = self.tree()
        for p in procs:
            try:
                p.terminate()
            except psutil.NoSuchProcess:
                pass
        _, alive = psutil.wait_procs(procs, timeout=grace)
        for p in alive:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        psutil.wait_procs(alive, timeout=5)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=10)

    def survivors(self) -> list[int]:
        """Processes of this node still alive (none once stopped)."""
        alive = []
        for p in psutil.process_iter():
            try:
                if self._ours(p) and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p.pid)
            except (ProcessLookupError, psutil.Error, OSError):
                continue
        return alive


class LocalCluster:
    """A head and worker nodes started with `ray start --block` on this machine, torn down by process id."""

    def __init__(self, base: Path, env: dict[str, str]) -> None:
        self.base, self.env = base, env
        self.port = _free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.nodes: list[Node] = []

    def start(self, name: str, head: bool, resources: dict[str, int]) -> Node:
        """Start a node and wait until it has joined."""
        temp_dir = self.base / name
        log = self.base / f"{name}.log"
        cmd = [RAY, "start", "--block", "--node-ip-address", "127.0.0.1", "--num-cpus", "1", "--num-gpus", "0",
               "--resources", json.dumps(resources), "--temp-dir", str(temp_dir), "--disable-usage-stats",
               "--object-store-memory", str(100 * 1024 * 1024), "--min-worker-port", "0", "--max-worker-port", "0",
               "--dashboard-agent-listen-port", str(_free_port()), "--dashboard-agent-grpc-port", str(_free_port()),
               "--metrics-export-port", str(_free_port()), "--runtime-env-agent-port", str(_free_port())]
        if head:
            cmd += ["--head", "--port", str(self.port), "--include-dashboard", "false",
                    "--dashboard-port", str(_free_port())]
        else:
            cmd += ["--address", self.address]
        with open(log, "wb") as out:
            proc = subprocess.Popen(cmd, cwd=ROOT, env={**self.env, NODE_MARK: str(temp_dir)}, stdout=out,
                                    stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        node = Node(name, proc, temp_dir, log)
        self.nodes.append(node)
        deadline = time.monotonic() + 120
        while READY not in log.read_text(errors="replace"):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"ray node {name} did not start:\n{log.read_text(errors='replace')[-3000:]}")
            time.sleep(0.2)
        while not node.node_id and time.monotonic() < deadline:
            ports = list((temp_dir / "session_latest").glob("metrics_export_port_*"))
            node.node_id = ports[0].name.rsplit("_", 1)[1] if ports else ""
            time.sleep(0.1)
        node.tree()
        return node

    def shutdown(self) -> list[int]:
        """Stop every node (workers first); returns the ids of processes that survived (should be none)."""
        for node in reversed(self.nodes):
            node.stop()
        time.sleep(0.5)
        return [pid for node in self.nodes for pid in node.survivors()]


@dataclass
class Cluster:
    """What the integration tests get: the cluster, its nodes, the shared environment and the events log."""

    cluster: LocalCluster
    head: Node
    worker: Node
    env: dict[str, str]
    events: Path
    fake_secrets: dict[str, str]


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    """A head and a worker node (one CPU each) joined over the machine's address, with token auth on."""
    base = Path(tempfile.mkdtemp(prefix="fsc-", dir="/tmp"))  # short: Ray's socket paths must stay < 108 chars
    token = base / "auth_token"
    fd = os.open(token, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    os.write(fd, secrets.token_hex(32).encode())
    os.close(fd)
    fake = {"WANDB_API_KEY": secrets.token_hex(20),
            "AWS_ACCESS_KEY_ID": "AKIA" + "".join(secrets.choice("ABCDEFGHIJKLMNOPQRSTUVWXYZ234567")
                                                   for _ in range(16)),
            "AWS_SECRET_ACCESS_KEY": secrets.token_urlsafe(30)[:40]}
    events = base / "events.jsonl"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("RAY_", "FSNET_TEST_"))}
    env.update(fake, RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token), RAY_USAGE_STATS_ENABLED="0",
               FSNET_DATA_DIR=os.environ.get("FSNET_DATA_DIR", str(ROOT.parent / "shared" / "data")),
               FSNET_TRIAL_EVENTS=str(events), FSNET_TEST_REPORT_DELAY=str(REPORT_DELAY),
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    local = LocalCluster(base, env)
    try:
        head = local.start("head", head=True, resources={"head": 1})
        worker = local.start("worker", head=False, resources={"worker_node": 1})
        yield Cluster(local, head, worker, env, events, {**fake, "RAY_AUTH_TOKEN": token.read_text()})
    finally:
        survivors = local.shutdown()
        shutil.rmtree(base, ignore_errors=True)
        assert survivors == [], f"Ray processes left running: {survivors}"


def _events(path: Path, offset: int = 0) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    with open(path, "rb") as handle:
        handle.seek(offset)
        return [json.loads(line) for line in handle.read().decode().splitlines() if line.strip()]


def _ablate(c: Cluster, results: Path, experiment: str, *extra: str, wandb: str = "off") -> list[str]:
    return [PY, "-m", "harness.ablate", "--address", c.cluster.address, "--space", "advanced", "--design", "loo",
            "--seeds", "1", "--epochs", "0", "--cpus-per-trial", "1", "--wandb", wandb, "--results", str(results),
            "--storage", str(results / "ray"), "--experiment", experiment, *extra]


@dataclass
class Run:
    """A finished ablation on the cluster: its results folder, output and the trial events it logged."""

    results: Path
    folder: Path
    done: subprocess.CompletedProcess
    events: list[dict[str, Any]]


@pytest.fixture(scope="module")
def spread_run(cluster: Cluster, tmp_path_factory: pytest.TempPathFactory) -> Run:
    """advanced loo, 5 trials of 40 steps on the two one-CPU nodes, with W&B offline and fake credentials set."""
    results = tmp_path_factory.mktemp("spread")
    offset = cluster.events.stat().st_size if cluster.events.exists() else 0
    done = subprocess.run(_ablate(cluster, results, "spread", "--max-steps", "40", wandb="offline"), cwd=ROOT,
                          env={**cluster.env, "WANDB_MODE": "offline", "WANDB_SILENT": "true"},
                          capture_output=True, text=True, timeout=300)
    return Run(results, results / "spread", done, _events(cluster.events, offset))


@pytest.mark.integration
def test_trials_spread_over_both_nodes_into_one_trials_file(cluster: Cluster, spread_run: Run) -> None:
    assert spread_run.done.returncode == 0, spread_run.done.stderr[-3000:]
    trials = pq.read_table(spread_run.folder / "trials.parquet").to_pandas()
    assert len(trials) == 5 and trials["trial_id"].is_unique and set(trials["status"]) == {"TERMINATED"}
    assert (trials["steps"] == 40).all() and trials["mse"].map(math.isfinite).all()
    assert set(trials["device"]) == {"cpu"}
    starts = [e for e in spread_run.events if e["event"] == "start"]
    assert {e["trial_id"] for e in starts} == set(trials["trial_id"])
    assert {e["node_id"] for e in starts} == {cluster.head.node_id, cluster.worker.node_id}  # both nodes ran trials
    assert all(e["gpu_ids"] == [] and e["device"] == "cpu" for e in starts)
    assert "[5/5]" in spread_run.done.stdout
    assert (spread_run.results / "ray" / "spread").is_dir()  # Ray's state went to --storage
    assert not (spread_run.folder / "ray").exists()


@pytest.mark.integration
def test_no_credential_reaches_any_written_file(cluster: Cluster, spread_run: Run) -> None:
    assert spread_run.done.returncode == 0, spread_run.done.stderr[-3000:]
    files = [p for p in spread_run.results.rglob("*") if p.is_file()]
    names = {p.name for p in files}
    assert {"experiment.json", "trials.parquet", "curves.parquet"} <= names and len(files) > 10
    assert (spread_run.folder / "wandb").is_dir()  # --wandb offline: W&B's own run files are scanned too
    for path in files:
        data = path.read_bytes()
        for name, value in cluster.fake_secrets.items():
            assert value.encode() not in data, f"{name} written to {path}"
    for output in (spread_run.done.stdout, spread_run.done.stderr):
        assert not any(v in output for v in cluster.fake_secrets.values())


@pytest.mark.integration
def test_a_lost_node_s_trials_resume_on_the_head_from_their_checkpoints(cluster: Cluster, tmp_path: Path) -> None:
    """Runs last in this module: it stops the worker node for good."""
    results = tmp_path / "r"
    offset = cluster.events.stat().st_size if cluster.events.exists() else 0
    cmd = _ablate(cluster, results, "fault", "--max-steps", "60", "--report-every", "10", "--checkpoint-every", "10",
                  "--max-failures", "3")
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as o, open(err, "w") as e:
        driver = subprocess.Popen(cmd, cwd=ROOT, env=cluster.env, stdout=o, stderr=e, start_new_session=True)
    try:
        victims: set[str] = set()
        deadline = time.monotonic() + 180
        while not victims and driver.poll() is None and time.monotonic() < deadline:
            log = _events(cluster.events, offset)
            ended = {x["trial_id"] for x in log if x["event"] == "end"}
            on_worker = {x["trial_id"] for x in log if x["event"] == "start" and x["node_id"] == cluster.worker.node_id}
            victims = {x["trial_id"] for x in log if x["event"] == "checkpoint" and x["step"] >= 20
                       and x["trial_id"] in on_worker - ended}
            time.sleep(0.05)
        assert victims, "no trial reached a checkpoint on the worker node"
        cluster.worker.stop()
        stopped_at = time.monotonic()
        driver.wait(timeout=240)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
            driver.wait(timeout=30)
    stdout, stderr = out.read_text(), err.read_text()
    assert driver.returncode == 0, stderr[-3000:]
    assert cluster.worker.survivors() == []
    trials = pq.read_table(results / "fault" / "trials.parquet").to_pandas()
    assert len(trials) == 5 and trials["trial_id"].is_unique and trials["variant"].is_unique
    assert set(trials["status"]) == {"TERMINATED"} and (trials["steps"] == 60).all()
    assert trials["mse"].map(math.isfinite).all()
    curves = pq.read_table(results / "fault" / "curves.parquet").to_pandas()
    assert set(curves["trial_id"]) == set(trials["trial_id"]) and not curves.duplicated(["trial_id", "step"]).any()
    log = _events(cluster.events, offset)
    for victim in victims:
        starts = [x for x in log if x["event"] == "start" and x["trial_id"] == victim]
        assert starts[0]["node_id"] == cluster.worker.node_id and starts[0]["step"] == 0
        retry = starts[-1]
        assert retry["node_id"] == cluster.head.node_id and retry["attempt"] >= 2 and retry["step"] >= 10, starts
        ends = [x for x in log if x["event"] == "end" and x["trial_id"] == victim]
        assert len(ends) == 1 and ends[0]["node_id"] == cluster.head.node_id
    assert "[retry]" in stdout and "[5/5]" in stdout
    print(f"worker stopped; experiment finished {time.monotonic() - stopped_at:.1f} s later")
