"""The README's two commands on a bare machine: a fresh clone, no uv on PATH, no venv.

The clone is made from this repository's HEAD (what CI checks out); its ``cluster.toml`` gets
free ports instead of the shipped ones, so the test never meets a cluster it did not start.
PATH holds only a ``python3`` (the distribution's when it is 3.11+, else the one running the
tests) and git, so ``dev.py`` must install uv itself. It then checks what the README
promises: the cluster command installs only runtime packages and serves; the test command
runs while that cluster runs and leaves it untouched; Ctrl-C stops the cluster with exit 0.

Downloads come from pip's and uv's caches when they are warm (CI warms them by running
``dev.py`` itself); a machine without an index or a cache fails here, as the README would.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from parakoon_testing import wait_until

from parakoon_client import codec

from .conftest import RawConnection, on_free_ports, serving_master_port

ROOT = Path(__file__).resolve().parent.parent
FIRST_INSTALL_SECS = 240.0  # venv + pip install uv + uv sync, on a loaded 2-core machine
TAIL = 3000  # characters of output shown with a failure


def bare_python() -> str:
    """A python3 that is not inside this project's venv: the system's when it is new enough."""
    system = Path("/usr/bin/python3")
    if system.exists():
        version = subprocess.run(
            [str(system), "-c", "import sys; print(sys.version_info >= (3, 11))"],
            capture_output=True,
            text=True,
            check=False,
        )
        if version.stdout.strip() == "True":
            return str(system)
    return os.path.realpath(getattr(sys, "_base_executable", sys.executable))


def bare_env(bin_dir: Path) -> dict[str, str]:
    bin_dir.mkdir()
    (bin_dir / "python3").symlink_to(bare_python())
    git = shutil.which("git")
    assert git is not None, "git is needed to clone"
    (bin_dir / "git").symlink_to(git)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in {"VIRTUAL_ENV", "PYTHONPATH", "PYTHONHOME"} and not key.startswith("UV_")
    }
    env["PATH"] = str(bin_dir)
    env.pop("PARAKOON_SEED", None)
    assert shutil.which("uv", path=env["PATH"]) is None
    return env


def readme_commands() -> tuple[list[str], list[str]]:
    """The two commands of the README's "Set-up" section, as argument lists."""
    readme = (ROOT / "README.md").read_text()
    setup = readme[readme.index("## Set-up") :]
    blocks = re.findall(r"```sh\n(.*?)```", setup, re.S)
    cluster, tests = blocks[0].strip(), blocks[1].strip()
    return cluster.split(), tests.split()


@pytest.mark.timeout(600)
def test_readme_two_commands_on_a_bare_machine(tmp_path: Path) -> None:
    cluster_command, test_command = readme_commands()
    assert cluster_command[:2] == ["python3", "dev.py"], cluster_command
    env = bare_env(tmp_path / "bin")
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(ROOT), str(clone)], env=env, check=True)
    moved = on_free_ports((clone / "cluster.toml").read_text())
    (clone / "cluster.toml").write_text(moved.text)
    client_ports = moved.client_ports

    log_path = tmp_path / "cluster.log"
    with open(log_path, "wb") as log:
        cluster = subprocess.Popen(
            cluster_command,
            cwd=clone,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group, as a terminal would give it
        )

    def master_port() -> int | None:
        return serving_master_port(client_ports, "parakoon")

    def log_tail() -> str:
        return log_path.read_text(errors="replace")[-TAIL:]

    try:
        port = wait_until(
            lambda: cluster.poll() is None and master_port(),
            "the README cluster elected a master",
            timeout=FIRST_INSTALL_SECS,
            interval=0.5,
        )
        assert cluster.poll() is None, log_tail()
        assert isinstance(port, int)
        assert (clone / ".tools" / "bin" / "uv").exists(), "dev.py installed its own uv"
        site = list((clone / ".venv").glob("lib/python3*/site-packages"))
        assert site, "the cluster command made .venv"
        assert not (site[0] / "pytest").exists(), "the cluster command installed dev tools"
        with RawConnection(port, cluster_id="parakoon") as conn:
            assert conn.call(codec.Set(key=b"readme", value=b"works")) is None

        # The README's test command, while that cluster runs, limited to the test that starts
        # a cluster from the same cluster.toml (the whole suite would run this test again).
        tests = subprocess.run(
            [
                *test_command,
                "-q",
                "-p",
                "no:cacheprovider",
                "tests/test_node_cluster.py",
                "-k",
                "repository_cluster_toml",
            ],
            cwd=clone,
            env=env,
            capture_output=True,
            text=True,
            timeout=FIRST_INSTALL_SECS + 120,
            check=False,
        )
        assert tests.returncode == 0, tests.stdout[-TAIL:] + tests.stderr[-TAIL:]
        assert "1 passed" in tests.stdout, tests.stdout[-2000:]

        # The cluster was not disturbed: same master's store, our key, nothing of the test's.
        port = wait_until(master_port, "the README cluster still has a master", timeout=30)
        assert isinstance(port, int)
        with RawConnection(port, cluster_id="parakoon") as conn:
            assert conn.call(codec.Get(key=b"readme")) == b"works"
            assert conn.call(codec.PrefixKeys(prefix=b"")) == [b"readme"]
    finally:
        if cluster.poll() is None:
            os.killpg(cluster.pid, signal.SIGINT)  # Ctrl-C in the cluster's terminal
            try:
                cluster.wait(timeout=30)
            finally:
                if cluster.poll() is None:
                    os.killpg(cluster.pid, signal.SIGKILL)
                    cluster.wait()
    assert cluster.returncode == 0, log_tail()
    assert "Traceback" not in log_path.read_text(errors="replace"), log_tail()
