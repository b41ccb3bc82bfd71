"""Framework releases as environments: the version axis of `normconf run --versions`.

One virtual environment per requested release (`onnxruntime=1.20.1`), created once in a cache folder
and reused. It holds the release and whatever companions pip resolves for it (jaxlib, flax, haiku and
equinox for a JAX release) and nothing else: a `.pth` line adds this interpreter's site-packages after
the environment's own, so NumPy, normconf itself and the other frameworks come from here while the
release shadows the installed one. An adapter's isolated child (adapters/_isolated.py) runs under the
environment's interpreter (NORMCONF_CHILD_PYTHON); the suite and the reference stay here.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

CHILD_PYTHON = "NORMCONF_CHILD_PYTHON"  # the interpreter isolated adapter children run under
RELEASE = "NORMCONF_RELEASE"  # "framework=version": what a run's results record as their release
CACHE = "NORMCONF_ENVS"  # where environments live (default: ~/.cache/normconf/envs)
MARKER = "normconf-env.json"  # written last: an environment without it (or whose check fails) is rebuilt
PTH = "zz_normconf_host.pth"  # sorts after the environment's own .pth files


@dataclass(frozen=True)
class Family:
    """A framework whose releases can be requested: what pip installs for release {v}, the module whose
    `__version__` proves it, the distribution that carries the version, and the adapters it serves."""

    requirements: tuple[str, ...]
    module: str
    distribution: str
    adapters: tuple[str, ...]


FAMILIES = {
    "onnxruntime": Family(
        ("onnxruntime=={v}",), "onnxruntime", "onnxruntime", ("onnxruntime", "onnxruntime[mvn]")
    ),
    "onnx": Family(("onnx=={v}",), "onnx", "onnx", ("onnx.reference", "onnx.reference[mvn]")),
    # jaxlib pinned with jax; flax, haiku and equinox: the releases pip finds compatible with it
    "jax": Family(
        ("jax=={v}", "jaxlib=={v}", "flax", "dm-haiku", "equinox"),
        "jax",
        "jax",
        ("flax.linen", "flax.nnx", "haiku", "equinox", "equinox[batch]"),
    ),
    # Keras on NumPy: the other backends need their framework's own release as well
    "keras": Family(("keras=={v}",), "keras", "keras", ("keras[numpy]",)),
    "torch": Family(("torch=={v}",), "torch", "torch", ("torch.functional", "torch.nn")),
    "tensorflow": Family(("tensorflow=={v}",), "tensorflow", "tensorflow", ("tf.nn", "tf.fused_batch_norm")),
    # tf_keras releases follow TensorFlow's: tf-keras 2.21.0 runs on tensorflow 2.21.x
    "tf-keras": Family(("tf-keras=={v}", "tensorflow~={v}"), "tf_keras", "tf-keras", ("tf_keras",)),
    "paddlepaddle": Family(
        ("paddlepaddle=={v}",), "paddle", "paddlepaddle", ("paddle.functional", "paddle.nn")
    ),
    "mlx": Family(("mlx[cpu]=={v}",), "mlx.core", "mlx", ("mlx.nn",)),
}
# PEP 440 release numbers as pip takes them after "==" (no local versions or wildcards)
VERSION = re.compile(r"^\d+(\.\d+)*((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?$")


class ReleaseError(ValueError):
    """A request that cannot run: its one-line reason."""


@dataclass(frozen=True)
class Release:
    framework: str
    version: str

    @property
    def family(self) -> Family:
        return FAMILIES[self.framework]

    @property
    def label(self) -> str:
        return f"{self.framework}={self.version}"

    def requirements(self) -> list[str]:
        return [r.format(v=self.version) for r in self.family.requirements]


def parse(specs: list[str]) -> list[Release]:
    """`["jax=0.4.38,0.10.2", "onnxruntime=1.20.1"]` -> releases, in order; an unknown framework or a
    malformed version is a ReleaseError naming it."""
    releases: list[Release] = []
    for spec in specs:
        framework, sep, versions = spec.partition("=")
        framework = framework.strip()
        if not sep or not versions.strip():
            raise ReleaseError(f"--versions {spec!r}: write FRAMEWORK=VERSION[,VERSION...]")
        if framework not in FAMILIES:
            raise ReleaseError(
                f"--versions {spec!r}: unknown framework {framework!r}; one of {', '.join(FAMILIES)}"
            )
        for version in (v.strip() for v in versions.split(",")):
            if not VERSION.match(version):
                raise ReleaseError(f"--versions {spec!r}: {version!r} is not a release number (e.g. 1.20.1)")
            if Release(framework, version) not in releases:
                releases.append(Release(framework, version))
    return releases


def installed(framework: str) -> str | None:
    """The release this interpreter has of `framework` (None: not installed)."""
    try:
        return metadata.version(FAMILIES[framework].distribution)
    except metadata.PackageNotFoundError:
        return None


def family_of(adapter: str) -> str | None:
    """The framework whose releases decide `adapter`'s behaviour (None: none requestable)."""
    return next((name for name, family in FAMILIES.items() if adapter in family.adapters), None)


def release_of(adapter: str) -> str | None:
    """The release of `adapter`'s framework this run measures: the requested one (NORMCONF_RELEASE), else
    the installed one; None where the adapter belongs to no family or its framework is not installed."""
    framework = family_of(adapter)
    if framework is None:
        return None
    requested, _, version = os.environ.get(RELEASE, "").partition("=")
    return version if requested == framework and version else installed(framework)


def root() -> Path:
    base = os.environ.get(CACHE) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "normconf", "envs"
    )
    return Path(base)


def path(release: Release) -> Path:
    tag = f"py{sys.version_info.major}{sys.version_info.minor}"
    return root() / f"{release.framework}-{release.version}-{tag}"


def _pip(args: list[str], python: str = sys.executable, timeout: float = 3600) -> subprocess.CompletedProcess:
    return subprocess.run(
        [python, "-m", "pip", "--disable-pip-version-check", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _last_line(done: subprocess.CompletedProcess) -> str:
    lines = [ln.strip() for ln in (done.stderr + "\n" + done.stdout).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("ERROR")] or lines
    return errors[-1] if errors else f"exit {done.returncode}"


def check_wheels(releases: list[Release]) -> None:
    """Refuse, before anything runs, a release with no wheel for this Python and platform (pip resolves
    the exact release alone, without installing it): a ReleaseError naming it."""
    for release in releases:
        pinned = release.requirements()[0]
        done = _pip(
            ["install", "--dry-run", "--no-deps", "--only-binary=:all:", "--ignore-installed", "-q", pinned]
        )
        if done.returncode != 0:
            raise ReleaseError(
                f"{release.label}: no wheel for Python {sys.version_info.major}.{sys.version_info.minor} "
                f"on this platform ({_last_line(done)})"
            )


def _marker(env: Path) -> dict | None:
    try:
        return json.loads((env / MARKER).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def python_of(env: Path) -> Path:
    return env / "bin" / "python"


def healthy(release: Release, env: Path) -> bool:
    """The environment exists, finished building, and its interpreter imports the release."""
    if _marker(env) is None or not python_of(env).exists():
        return False
    family = release.family
    probe = f"import {family.module}, importlib.metadata as m; print(m.version({family.distribution!r}))"
    try:
        done = subprocess.run([python_of(env), "-c", probe], capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0 and done.stdout.strip() == release.version


def ensure(release: Release, log=print) -> Path:
    """The release's environment, built where it is missing or broken (then checked); its interpreter's
    path. A release pip cannot install here is a ReleaseError with pip's last error line."""
    env = path(release)
    if healthy(release, env):
        return python_of(env)
    if env.exists():
        log(f"{release.label}: environment {env} is broken; rebuilding")
        shutil.rmtree(env)
    env.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    base = getattr(sys, "_base_executable", sys.executable)
    done = subprocess.run([base, "-m", "venv", str(env)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError(f"{release.label}: cannot create a virtual environment ({_last_line(done)})")
    site = subprocess.run(
        [python_of(env), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    host = sysconfig.get_paths()["purelib"]
    # addsitedir, not a bare path: the host's own .pth files (normconf's editable install) apply too
    Path(site, PTH).write_text(f"import site; site.addsitedir({host!r})\n", encoding="utf-8")
    done = _pip(["install", "-q", *release.requirements()], python=str(python_of(env)))
    if done.returncode != 0:
        shutil.rmtree(env, ignore_errors=True)
        raise ReleaseError(f"{release.label}: pip cannot install it here ({_last_line(done)})")
    owned = _pip(["list", "--path", site, "--format=json"], python=str(python_of(env)))
    venv_own = {"pip", "setuptools", "wheel"}
    packages = {
        p["name"]: p["version"] for p in json.loads(owned.stdout or "[]") if p["name"] not in venv_own
    }
    (env / MARKER).write_text(
        json.dumps(
            {
                "framework": release.framework,
                "version": release.version,
                "python": sys.version.split()[0],
                "host": host,
                "packages": packages,
                "created": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "seconds": round(time.monotonic() - started, 1),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    if not healthy(release, env):
        raise ReleaseError(f"{release.label}: installed, but its interpreter does not import it")
    log(f"{release.label}: environment built in {time.monotonic() - started:.0f} s ({env})")
    return python_of(env)


def listing() -> list[dict]:
    """The cached environments: name, release, packages of their own, size on disk, built or broken."""
    found = []
    for env in sorted(p for p in root().glob("*") if p.is_dir()):
        marker = _marker(env) or {}
        size = sum(f.stat().st_size for f in env.rglob("*") if f.is_file() and not f.is_symlink())
        found.append(
            {
                "name": env.name,
                "path": str(env),
                "release": f"{marker.get('framework', '?')}={marker.get('version', '?')}",
                "packages": marker.get("packages", {}),
                "megabytes": round(size / 2**20, 1),
                "state": "built" if marker else "broken (rebuilt on next use)",
            }
        )
    return found


def remove(names: list[str]) -> list[str]:
    """Delete the named environments (folder names, or FRAMEWORK=VERSION); the removed folder names. A
    name that matches none refuses the lot, before anything is deleted."""
    entries = listing()
    missing = [n for n in names if not any(n in (e["name"], e["release"]) for e in entries)]
    if missing:
        raise ReleaseError(f"no cached environment {', '.join(missing)} (see `normconf envs`)")
    chosen = [e for e in entries if e["name"] in names or e["release"] in names]
    for entry in chosen:
        shutil.rmtree(entry["path"])
    return [e["name"] for e in chosen]


def child_environment(release: Release, python: Path | None) -> dict[str, str]:
    """What a run of this release sets: its children's interpreter (none: this one has the release) and
    the release its results record."""
    env = {RELEASE: release.label}
    if python is not None:
        env[CHILD_PYTHON] = str(python)
    return env


__all__ = [
    "CHILD_PYTHON",
    "FAMILIES",
    "RELEASE",
    "Release",
    "ReleaseError",
    "check_wheels",
    "child_environment",
    "ensure",
    "family_of",
    "installed",
    "listing",
    "parse",
    "release_of",
    "remove",
]
