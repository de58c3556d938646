"""docker-compose.yml, checked the strongest way available without a Docker engine: parsed, every
service's command parsed by the real CLI, the health and start-order wiring checked, and the same
topology (init, 4 validators, scaled miners, driver) started as local processes from what the
compose file says, down to a training run whose weights equal the local run's."""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml

from driver.local import LocalRunner
from driver.processes import Processes
from driver.training import TrainConfig, train
from layerchain.cli import app

ROOT = Path(__file__).resolve().parents[1]
VALIDATORS = [f"validator{i}" for i in range(4)]
URL = re.compile(r"http://(validator\d):(\d+)")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def parse_cli(args: list[str]) -> Any:
    """Parse `layerchain ARGS` exactly as the container's entrypoint would, without running it.

    Returns the subcommand's click context; raises click's UsageError family on bad arguments.
    (Typer ships its own copy of click, so the classes are reached through the app.)
    """
    group: Any = typer.main.get_command(app)
    name, *rest = args
    command = group.commands.get(name)
    assert command is not None, f"layerchain has no subcommand {name!r}"
    return command.make_context(name, rest)


def test_services_and_profiles(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert set(services) == {"init", *VALIDATORS, "miner", "driver"}
    assert services["driver"]["profiles"] == ["train"]
    assert services["init"]["restart"] == "no"
    assert "testnet" in compose["volumes"]


def test_every_command_is_a_real_cli_invocation(compose: dict[str, Any]) -> None:
    expected = {"init": "testnet", "miner": "miner", "driver": "train"}
    expected.update({v: "node" for v in VALIDATORS})
    for name, service in compose["services"].items():
        command = [str(a) for a in service["command"]]
        ctx = parse_cli(command)
        assert ctx.info_name == expected[name], name
    with pytest.raises(Exception, match="No such option: --nodes"):
        parse_cli(["miner", "--nodes", "http://x"])  # the check itself can fail
    with pytest.raises(Exception, match="Missing parameter: key"):
        parse_cli(["miner", "--node", "http://x"])


def test_validators_are_healthchecked_and_everyone_waits_for_them(compose: dict[str, Any]) -> None:
    services = compose["services"]
    for i, name in enumerate(VALIDATORS):
        service = services[name]
        probe = " ".join(service["healthcheck"]["test"])
        assert f"http://127.0.0.1:{26600 + i}/api/v1/health" in probe
        assert service["depends_on"] == {"init": {"condition": "service_completed_successfully"}}
        assert service["ports"] == [f"{26600 + i}:{26600 + i}"]
        assert service["environment"]["LAYERCHAIN_HOST"] == "0.0.0.0"
    for dependent in ("miner", "driver"):
        assert services[dependent]["depends_on"] == {
            v: {"condition": "service_healthy"} for v in VALIDATORS
        }


def test_the_miner_service_can_scale(compose: dict[str, Any]) -> None:
    miner = compose["services"]["miner"]
    assert "ports" not in miner and "container_name" not in miner
    assert "--create-key" in miner["command"]  # each replica makes its own identity
    urls = [a for a in miner["command"] if str(a).startswith("http://")]
    assert sorted(URL.match(u).group(1) for u in urls) == VALIDATORS  # type: ignore[union-attr]


def _free_base(count: int) -> int:
    for base in range(31000, 60000, 97):
        sockets = []
        try:
            for port in range(base, base + count):
                sock = socket.socket()
                sockets.append(sock)
                sock.bind(("127.0.0.1", port))
            return base
        except OSError:
            continue
        finally:
            for sock in sockets:
                sock.close()
    raise RuntimeError("no free port range")


class Translate:
    """Turns a container command into a loopback one: volume paths, hostnames, ports."""

    def __init__(self, root: Path, base: int) -> None:
        self.root = root
        self.base = base

    def port(self, port: int) -> int:
        return self.base + (port - 26600)

    def __call__(self, args: list[Any], home: Path | None = None) -> list[str]:
        out = []
        for arg in map(str, args):
            arg = arg.replace("/testnet", str(self.root / "testnet"))
            if home is not None:
                arg = arg.replace("/home/layerchain", str(home))
            arg = URL.sub(lambda m: f"http://127.0.0.1:{self.port(int(m.group(2)))}", arg)
            arg = arg.replace("validator{i}", "127.0.0.1")
            out.append(arg)
        if "--base-port" in out:
            out[out.index("--base-port") + 1] = str(self.base)
        return out


@pytest.mark.slow
def test_the_compose_topology_runs_as_local_processes(
    compose: dict[str, Any], tmp_path: Path
) -> None:
    services = compose["services"]
    translate = Translate(tmp_path, _free_base(4))
    layerchain = [sys.executable, "-m", "layerchain"]
    init = translate(services["init"]["command"])
    for _ in range(2):  # the second run keeps the existing testnet (compose up, again)
        done = subprocess.run([*layerchain, *init], capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
    assert "keeping it" in done.stdout
    with Processes(tmp_path / "logs") as procs:
        health = {}
        for name in VALIDATORS:
            service = services[name]
            env = {k: str(v) for k, v in service["environment"].items()}
            env["LAYERCHAIN_HOST"] = "127.0.0.1"  # loopback only, on a shared machine
            procs.start(name, translate(service["command"]), env=env)
            probe = " ".join(service["healthcheck"]["test"])
            url = re.search(r"http://127\.0\.0\.1:(\d+)(/\S+?)'", probe)
            assert url is not None
            health[name] = f"http://127.0.0.1:{translate.port(int(url.group(1)))}{url.group(2)}"
        procs.wait_healthy(health, timeout=90)
        for replica in range(2):  # docker compose up --scale miner=2
            home = tmp_path / f"miner-{replica}"
            procs.start(f"miner-{replica}", translate(services["miner"]["command"], home=home))
        driver = translate(services["driver"]["command"])
        small = ["--epochs", "1", "--batch", "512", "--hidden", "8", "--shards", "2"]
        done = subprocess.run(
            [*layerchain, *driver, *small], capture_output=True, text=True, timeout=400
        )
        assert done.returncode == 0, done.stderr[-3000:]
        procs.check_alive()
    weights = re.search(r"weights hash: ([0-9a-f]{64})", done.stdout)
    assert weights is not None
    config = TrainConfig("digits", 1, 512, (8,), Fraction(1, 2), 0, 2)
    assert weights.group(1) == train(config, LocalRunner()).weights_hash
    for replica in range(2):
        assert (tmp_path / f"miner-{replica}" / "miner.pem").is_file()
