"""Federated training for real: driftpilot's Flower app run by a ``flower-superlink`` on the
``flower-supernode`` processes connected to it, rather than on the in-process grid of
:mod:`driftpilot.edge.simulation`.

:func:`run_on_superlink` writes a Flower app folder (a ``pyproject.toml`` naming
:data:`driftpilot.edge.server_app.app` and :data:`driftpilot.edge.client_app.app` and declaring
the run configuration :func:`driftpilot.edge.server_app.main` reads), builds it into a FAB,
submits it to the SuperLink's Control API with this run's settings, waits for the run to finish
and reads the model and record the ServerApp wrote (:func:`~driftpilot.edge.server_app.
read_outcome`). The FAB carries no code: the SuperLink's and the SuperNodes' Python must have
driftpilot installed (the FAB's folder is put first on ``sys.path``, and holds nothing that could
shadow it). The ServerApp reads ``model-dir`` and writes ``out-dir`` on the SuperLink's machine,
and this module reads ``out-dir`` on its own: both must see the same files (the same machine, or
a shared folder).

Submission uses the Control API's gRPC stubs (``StartRun``, ``ListRuns``, ``StopRun``) and the
FAB builder of ``flwr.cli``, the calls ``flwr run`` makes, rather than running ``flwr run`` in a
subprocess: that needs a SuperLink connection written into ``$FLWR_HOME/config.toml`` and exits
0 even when the run fails, so its status has to be asked for over the same API anyway. These are
flwr's internal modules, checked against flwr 1.32.1 (the version the project pins); a newer flwr
may move them.

:class:`LocalFederation` starts a SuperLink and SuperNodes on loopback, for tests and for trying
a deployment on one machine.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import fields
from pathlib import Path
from types import TracebackType
from typing import Any

from driftpilot.edge.server_app import FederatedOutcome, FederatedSettings, read_outcome, run_config_key

#: The app's name and publisher, as the SuperLink lists its runs.
APP_NAME = "driftpilot-federated"
APP_PUBLISHER = "driftpilot"
#: Seconds between two questions about a run's status.
POLL_SECONDS = 1.0
#: Seconds to wait for the Control API to answer at all.
CONNECT_SECONDS = 10.0


def settings_to_run_config(settings: FederatedSettings, model_dir: Path, out_dir: Path) -> dict[str, Any]:
    """The run configuration (key → bool, int, float or str) that makes the ServerApp train the
    model saved in ``model_dir`` with ``settings`` and write the result to ``out_dir``.

    A ``round_timeout`` of None (wait for every node) has no run-config form, since the ServerApp
    reads a number: it becomes a day.
    """
    config: dict[str, Any] = {
        "model-dir": str(Path(model_dir).resolve()),
        "out-dir": str(Path(out_dir).resolve()),
        "check-path": "",
    }
    for f in fields(settings):
        value = getattr(settings, f.name)
        if f.name == "round_timeout" and value is None:
            value = 86400.0
        if isinstance(f.default, float) or f.name == "round_timeout":
            value = float(value)
        config[run_config_key(f.name)] = value
    return config


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string


def write_app(folder: Path) -> Path:
    """Write the Flower app's ``pyproject.toml`` into ``folder`` (its only file); its
    ``[tool.flwr.app.config]`` declares every key :func:`settings_to_run_config` sets, with the
    defaults of :class:`FederatedSettings` (the SuperLink refuses overrides of undeclared keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    defaults = settings_to_run_config(FederatedSettings(), Path("."), Path("."))
    defaults["model-dir"] = defaults["out-dir"] = ""
    config = "\n".join(f"{key} = {_toml_value(value)}" for key, value in defaults.items())
    (folder / "pyproject.toml").write_text(
        f"""[build-system]
requires = ["hatchling"]
build-backend = "hatchling.build"

[project]
name = "{APP_NAME}"
version = "1.0.0"
description = "driftpilot's federated training (the code is driftpilot's, installed on every machine)"
license = "Apache-2.0"
dependencies = []

[tool.flwr.app]
publisher = "{APP_PUBLISHER}"

[tool.flwr.app.components]
serverapp = "driftpilot.edge.server_app:app"
clientapp = "driftpilot.edge.client_app:app"

[tool.flwr.app.config]
{config}
"""
    )
    return folder / "pyproject.toml"


def run_on_superlink(
    start: Path,
    settings: FederatedSettings,
    *,
    control_address: str,
    out_dir: Path,
    insecure: bool = True,
    root_certificates: Path | None = None,
    timeout: float = 1800,
    check: Path | None = None,
) -> FederatedOutcome:
    """Train the model saved in ``start`` on the nodes of the SuperLink whose Control API listens
    at ``control_address`` (``HOST:PORT``); the result is written to ``out_dir`` and returned.

    ``insecure`` talks to the Control API without TLS; otherwise ``root_certificates`` (a PEM CA
    bundle) verifies the SuperLink's certificate (None: the system's roots). Raises
    ``RuntimeError`` when the SuperLink cannot be reached (naming ``control_address``), refuses the
    run, or the run fails (with the SuperLink's status details and the tail of the run's log) or
    does not finish within ``timeout`` seconds (the run is then stopped). ``check``: a Parquet
    file of the server's own labelled rows (a ``target`` column) that the ServerApp screens
    updates on, readable where the SuperLink runs.
    """
    import grpc  # type: ignore[import-untyped]  # no stubs installed; flwr.* is ignored likewise
    from flwr.cli.build import build_fab_from_disk
    from flwr.cli.config_utils import load_and_validate
    from flwr.common.serde import fab_to_proto, user_config_to_proto
    from flwr.proto.control_pb2 import ListRunsRequest, StartRunRequest, StopRunRequest
    from flwr.proto.control_pb2_grpc import ControlStub
    from flwr.supercore.fab import Fab
    from flwr.supercore.grpc import create_channel

    out_dir = Path(out_dir)
    run_config = settings_to_run_config(settings, Path(start), out_dir)
    if check is not None:
        run_config["check-path"] = str(Path(check).resolve())
    with tempfile.TemporaryDirectory(prefix="driftpilot-fab-") as tmp:
        write_app(Path(tmp))
        _config, _warnings = load_and_validate(Path(tmp) / "pyproject.toml")
        fab_bytes = build_fab_from_disk(Path(tmp))
    fab = Fab(hashlib.sha256(fab_bytes).hexdigest(), fab_bytes, {})

    certificates = None if insecure or root_certificates is None else Path(root_certificates).read_bytes()
    channel = create_channel(server_address=control_address, insecure=insecure, root_certificates=certificates)
    try:
        connect = min(CONNECT_SECONDS, timeout)
        try:
            grpc.channel_ready_future(channel).result(timeout=connect)
        except grpc.FutureTimeoutError:
            raise RuntimeError(
                f"cannot reach the SuperLink's Control API at {control_address} within {connect:g} s "
                "(is flower-superlink running there, with --control-api-address on that port"
                + (", and without TLS (--insecure)?" if insecure else ", with TLS?")
                + ")"
            ) from None
        stub = ControlStub(channel)
        request = StartRunRequest(
            fab=fab_to_proto(fab), override_config=user_config_to_proto(run_config), federation=""
        )
        try:
            run_id = int(stub.StartRun(request, timeout=60).run_id)
        except grpc.RpcError as err:
            raise RuntimeError(f"the SuperLink at {control_address} refused the run: {_rpc_why(err)}") from err
        deadline = time.monotonic() + timeout
        status = ("pending", "", "")
        while True:
            try:
                listed = stub.ListRuns(ListRunsRequest(run_id=run_id), timeout=30).run_dict[run_id].status
                status = (listed.status, listed.sub_status, listed.details)
            except grpc.RpcError as err:
                raise RuntimeError(
                    f"lost the SuperLink at {control_address} while run {run_id} was going: {_rpc_why(err)}"
                ) from err
            if status[0] == "finished":
                break
            if time.monotonic() > deadline:
                try:
                    stub.StopRun(StopRunRequest(run_id=run_id), timeout=30)
                    stopped = "stopped"
                except grpc.RpcError as err:
                    stopped = f"could not be stopped ({_rpc_why(err)})"
                raise RuntimeError(
                    f"federated run {run_id} on {control_address} did not finish within {timeout:g} s "
                    f"(last status {status[0]}); it was {stopped}" + _log_tail(stub, run_id)
                )
            time.sleep(POLL_SECONDS)
        if status[1] != "completed":
            why = status[2] or "no details given"
            raise RuntimeError(
                f"federated run {run_id} on {control_address} {status[1] or 'ended'}: {why}" + _log_tail(stub, run_id)
            )
    finally:
        channel.close()
    try:
        return read_outcome(out_dir)
    except FileNotFoundError as err:
        raise RuntimeError(
            f"federated run {run_id} completed but left no result under {out_dir}: the ServerApp writes it "
            "on the SuperLink's machine, which must share that folder with this one"
        ) from err


def _rpc_why(err: Any) -> str:
    code = err.code() if hasattr(err, "code") else None
    details = err.details() if hasattr(err, "details") else str(err)
    return f"{getattr(code, 'name', code)}: {details}"


def _log_tail(stub: Any, run_id: int, lines: int = 20) -> str:
    """The last ``lines`` of the run's log (what the ServerApp printed), or '' if the SuperLink
    has none to give within a few seconds."""
    from flwr.proto.control_pb2 import StreamLogsRequest

    text = ""
    try:
        for reply in stub.StreamLogs(StreamLogsRequest(run_id=run_id, after_timestamp=0.0), timeout=3):
            text += reply.log_output
            break
    except Exception:  # noqa: BLE001 - the log only adds to an error already being raised
        return ""
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Flower colours its log levels
    tail = [line for line in text.splitlines() if line.strip()][-lines:]
    return ("\n-- the run's log, last lines --\n" + "\n".join(tail)) if tail else ""


# -- one machine's federation, for tests and trials -------------------------------------------------


def flower_executable(name: str) -> str | None:
    """The path of Flower's command ``name`` (``flower-superlink``...): beside this Python first,
    then on ``PATH``; None when there is none."""
    beside = Path(sys.executable).parent / name
    if beside.exists():
        return str(beside)
    return shutil.which(name)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _node_config(values: Mapping[str, Any]) -> str:
    """``--node-config``'s ``key=value`` pairs: strings quoted, as Flower parses the values as TOML."""
    parts = []
    for key, value in values.items():
        if isinstance(value, str):
            if "'" in value and '"' in value:
                raise ValueError(f"node config value {value!r} holds both kinds of quote")
            value = f"'{value}'" if "'" not in value else f'"{value}"'
        else:
            value = _toml_value(value)
        parts.append(f"{key}={value}")
    return " ".join(parts)


class LocalFederation:
    """A ``flower-superlink`` and one ``flower-supernode`` per node on loopback ports, as a
    context manager: ``nodes`` maps each node's name to its data file (``node-name`` and
    ``data-path`` of its ``--node-config``).

    Every process runs in a session of its own, so that leaving stops it with what it started
    (``flower-superexec``, ``flwr-serverapp``, ``flwr-clientapp``): SIGTERM to each process group,
    then SIGKILL to what is left after ``stop_seconds``. Their output goes to ``<name>.log`` in
    ``workdir`` (:meth:`logs`). Flower's state lives in memory and ``workdir/flwr_home``.
    """

    def __init__(
        self,
        nodes: Mapping[str, Path],
        *,
        workdir: Path,
        startup_seconds: float = 60.0,
        stop_seconds: float = 15.0,
    ) -> None:
        if not nodes:
            raise ValueError("a federation needs at least one node")
        self.nodes = {name: Path(path).resolve() for name, path in nodes.items()}
        self.workdir = Path(workdir)
        self.startup_seconds = startup_seconds
        self.stop_seconds = stop_seconds
        self.fleet_port, self.control_port, self.appio_port = _free_port(), _free_port(), _free_port()
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    @property
    def control_address(self) -> str:
        return f"127.0.0.1:{self.control_port}"

    @property
    def fleet_address(self) -> str:
        return f"127.0.0.1:{self.fleet_port}"

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        # The SuperLink and SuperNodes start flower-superexec, flwr-serverapp and flwr-clientapp
        # by bare name: this Python's scripts must come first.
        env["PATH"] = os.pathsep.join(filter(None, [str(Path(sys.executable).parent), env.get("PATH")]))
        # The apps import driftpilot: the same code as this process's.
        root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [root, env.get("PYTHONPATH")]))
        env["FLWR_HOME"] = str(self.workdir / "flwr_home")
        env["FLWR_TELEMETRY_ENABLED"] = "0"
        env["FLWR_DISABLE_UPDATE_CHECK"] = "1"
        return env

    def _spawn(self, name: str, args: list[str]) -> None:
        with open(self.workdir / f"{name}.log", "wb") as log:
            self.processes[name] = subprocess.Popen(
                args, stdout=log, stderr=subprocess.STDOUT, env=self._env(), cwd=self.workdir, start_new_session=True
            )

    def _executable(self, name: str) -> str:
        found = flower_executable(name)
        if found is None:
            raise FileNotFoundError(f"{name} is not installed beside {sys.executable} nor on PATH (flwr provides it)")
        return found

    def start(self) -> LocalFederation:
        """Start the SuperLink, wait until its ports are open, then start the SuperNodes."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        (self.workdir / "flwr_home").mkdir(exist_ok=True)
        superlink, supernode = self._executable("flower-superlink"), self._executable("flower-supernode")
        self._spawn(
            "superlink",
            [
                superlink,
                "--insecure",
                "--fleet-api-address",
                self.fleet_address,
                "--control-api-address",
                self.control_address,
                "--serverappio-api-address",
                f"127.0.0.1:{self.appio_port}",
                # driftpilot is installed already; else every run would `uv sync` its FAB.
                "--disable-runtime-dependency-installation",
            ],
        )
        deadline = time.monotonic() + self.startup_seconds
        while not (_port_open(self.control_port) and _port_open(self.fleet_port)):
            if self.processes["superlink"].poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("flower-superlink did not come up:\n" + self.logs()["superlink"][-3000:])
            time.sleep(0.1)
        for name, path in self.nodes.items():
            self._spawn(
                f"supernode-{name}",
                [
                    supernode,
                    "--insecure",
                    "--superlink",
                    self.fleet_address,
                    "--clientappio-api-address",
                    "127.0.0.1:0",
                    "--node-config",
                    _node_config({"data-path": str(path), "node-name": name}),
                ],
            )
        return self

    def wait_for_nodes(self, timeout: float = 60.0) -> None:
        """Wait until every SuperNode has registered with the SuperLink (read off its log: the
        Control API lists only its caller's nodes)."""
        deadline = time.monotonic() + timeout
        while self.logs()["superlink"].count("[Fleet.ActivateNode] Activated") < len(self.nodes):
            dead = [n for n, p in self.processes.items() if p.poll() is not None]
            if dead or time.monotonic() > deadline:
                why = f"{', '.join(dead)} exited" if dead else f"not all connected within {timeout:g} s"
                raise RuntimeError(f"the SuperNodes did not connect ({why}):\n{self.log_tails()}")
            time.sleep(0.2)

    def logs(self) -> dict[str, str]:
        """Every process's output so far, by name (``superlink``, ``supernode-<node>``)."""
        out = {}
        for name in self.processes:
            path = self.workdir / f"{name}.log"
            out[name] = path.read_text(errors="replace") if path.exists() else ""
        return out

    def log_tails(self, lines: int = 30) -> str:
        """The last ``lines`` of every process's output, for a failure message."""
        return "\n".join(
            f"--- {name} ---\n" + "\n".join(text.splitlines()[-lines:]) for name, text in self.logs().items()
        )

    def stop(self) -> dict[str, int | None]:
        """Stop every process group (SIGTERM, then SIGKILL after ``stop_seconds``); their exit codes."""
        for process in self.processes.values():
            _signal_group(process, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_seconds
        codes: dict[str, int | None] = {}
        for name, process in self.processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                _signal_group(process, signal.SIGKILL)
                codes[name] = process.wait(timeout=10)
        # The group may still hold children their leader left behind.
        for process in self.processes.values():
            _signal_group(process, signal.SIGKILL)
        return codes

    def __enter__(self) -> LocalFederation:
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()


def _signal_group(process: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(process.pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


__all__ = [
    "LocalFederation",
    "flower_executable",
    "run_on_superlink",
    "settings_to_run_config",
    "write_app",
]
