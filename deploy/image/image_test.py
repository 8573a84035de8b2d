"""`make image-test`: build the service image with Podman and check the running container.

Steps (each bounded by a timeout; any failed check exits non-zero):

1. a Debian base image: where no registry is reachable, ``mmdebstrap`` builds a root file system of
   the host's Debian release (python3, venv, OpenMP, CA certificates, passwd) from the Debian mirror
   apt uses; the tarball is cached under the work folder (git-ignored) and imported with
   ``podman import``. ``--base IMAGE`` uses an existing image instead (e.g. python:3.11-slim).
2. the host's pip configuration (``pip config list``) copied into ``docker/pip/`` (certificate and
   constraint files with it; local index folders mounted read-only into the build) so that pip in
   the build reaches the package index the host uses; torch from a local CPU wheel if one is given.
3. ``podman build`` of the Dockerfile (BASE, TORCH build arguments); size and build time reported.
4. a small SASRec trained on the host on simulated data, mounted read-only at /models/run.
5. the container started without a key must fail at start with a message naming the key.
6. the container started with a key file mounted, a read-only root file system, no capabilities:
   cold start to /readyz, /healthz, an API key made in the container, events posted,
   recommendations, a user deleted (then 404), uid 10001, writes to / refused, the image's
   HEALTHCHECK passing.
7. no secret in any layer: ``podman history`` and every file of every layer of ``podman save``
   searched for the key's bytes, key files and the build's pip configuration.

Writes ``WORK/report.json`` and prints a summary. Podman settings these machines need:
``--runtime runc``, explicit ``--ulimit`` values, ``--network host`` (see docs/deploy.md).
"""

from __future__ import annotations

import argparse
import configparser
import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from urllib.parse import urlparse

import httpx

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = ["--runtime", "runc", "--ulimit", "nofile=1024:1024", "--ulimit", "nproc=1024:1024"]
BASE_PACKAGES = ["python3", "python3-venv", "ca-certificates", "libgomp1", "passwd"]
DPKG_SLIM = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*", "path-exclude=/usr/share/locale/*",
             "path-exclude=/usr/share/info/*", "path-include=/usr/share/doc/*/copyright"]
MERGED_USR_HOOK = "/usr/share/mmdebstrap/hooks/merged-usr"
PIP_DIR = ROOT / "docker" / "pip"
UID = 10001
T0 = time.monotonic()


class CheckFailed(RuntimeError):
    pass


def say(msg: str) -> None:
    print(f"[image-test {time.monotonic() - T0:7.1f}s] {msg}", flush=True)


def run(cmd: list[str], timeout: float, check: bool = True, **kw) -> subprocess.CompletedProcess:
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        raise CheckFailed(f"timed out after {timeout:.0f}s: {' '.join(cmd)[:300]}") from exc
    if check and res.returncode != 0:
        raise CheckFailed(f"exit {res.returncode}: {' '.join(cmd)[:300]}\n{(res.stdout + res.stderr)[-3000:]}")
    return res


def check(cond: bool, what: str) -> None:
    if not cond:
        raise CheckFailed(what)
    say(f"ok: {what}")


def os_release() -> dict[str, str]:
    out = {}
    for line in Path("/etc/os-release").read_text().splitlines():
        k, _, v = line.partition("=")
        out[k] = v.strip('"')
    return out


# -- 1. the base image --------------------------------------------------------------------------
def base_image(work: Path, suite: str, mirror: str, max_age_days: float) -> tuple[str, dict]:
    spec = {"suite": suite, "mirror": mirror, "packages": BASE_PACKAGES, "dpkg": DPKG_SLIM, "hook": "merged-usr"}
    key = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:12]
    tar = work / f"base-{suite}-{key}.tar"
    info = {"tarball": str(tar.relative_to(ROOT) if tar.is_relative_to(ROOT) else tar), "built": False}
    if not tar.exists() or time.time() - tar.stat().st_mtime > max_age_days * 86400:
        say(f"building the {suite} base root file system with mmdebstrap from {mirror} (cached in {tar.parent.name}/)")
        t = time.monotonic()
        tmp = tar.with_suffix(".tmp.tar")
        tmp.unlink(missing_ok=True)
        security = mirror.rstrip("/").rsplit("/", 1)[0] + "/debian-security" if mirror.rstrip("/").endswith("/debian") else None
        sources = [mirror, f"deb {mirror} {suite}-updates main"]
        if security:
            sources.append(f"deb {security} {suite}-security main")
        # merged /usr set up by mmdebstrap's hook, not the usrmerge package (which pulls in all of perl)
        hooks = [f"--hook-dir={MERGED_USR_HOOK}"] if Path(MERGED_USR_HOOK).is_dir() else []
        cmd = ["mmdebstrap", "--variant=minbase", f"--include={','.join(BASE_PACKAGES)}", *hooks,
               *[f"--dpkgopt={o}" for o in DPKG_SLIM], suite, str(tmp), *sources]
        run(cmd, timeout=900)
        tmp.rename(tar)
        info.update(built=True, seconds=round(time.monotonic() - t, 1))
    tag = f"localhost/evorec-base:{suite}-{key}-{int(tar.stat().st_mtime)}"
    if run(["podman", "image", "exists", tag], timeout=60, check=False).returncode != 0:
        say(f"importing {tar.name} as {tag}")
        run(["podman", "import", str(tar), tag], timeout=600)
    info["image"] = tag
    return tag, info


# -- 2. the host's pip configuration ------------------------------------------------------------
def pip_context() -> list[str]:
    """Write docker/pip/pip.conf from the host's pip configuration; return --volume flags for the
    local folders it names (file:// indexes, find-links)."""
    for old in PIP_DIR.iterdir():
        if old.name != "README.md":
            old.unlink()
    res = run([sys.executable, "-m", "pip", "config", "list"], timeout=60, check=False)
    files, envs = {}, {}
    for line in res.stdout.splitlines():
        m = re.match(r"^([^.=]*)\.([\w-]+)='(.*)'$", line.strip())
        if m:
            (envs if m.group(1) == ":env:" else files)[m.group(2)] = m.group(3)
    merged = {**files, **envs}  # pip: environment variables win over configuration files
    if not merged:
        say("the host has no pip configuration: the build uses pip's defaults")
        return []
    volumes: set[str] = set()
    out = {}
    for k, v in merged.items():
        if k in ("cert", "client-cert", "constraint", "requirement") and Path(v).is_file():
            target = PIP_DIR / f"{k}-{Path(v).name}"
            shutil.copyfile(v, target)
            out[k] = f"/etc/evorec-build/pip/{target.name}"
            continue
        if k in ("index-url", "extra-index-url", "find-links", "trusted-host", "default-timeout", "timeout", "retries",
                 "no-index", "prefer-binary", "only-binary", "proxy"):
            out[k] = v
            if k in ("index-url", "extra-index-url", "find-links"):
                for loc in v.split():
                    path = urlparse(loc).path if loc.startswith("file:") else loc if loc.startswith("/") else None
                    if path and Path(path).exists():
                        d = Path(path) if Path(path).is_dir() else Path(path).parent
                        if k != "find-links":  # an index's pages link files beside it (ROOT/simple -> ROOT/files)
                            d = d.parent
                        volumes.add(str(d).rstrip("/"))
    cp = configparser.ConfigParser(interpolation=None)
    cp["global"] = out
    with open(PIP_DIR / "pip.conf", "w") as f:
        cp.write(f)
    say(f"pip configuration for the build: {sorted(out)}; local folders mounted: {sorted(volumes)}")
    flags = []
    for d in sorted(volumes):
        flags += ["--volume", f"{d}:{d}:ro"]
    return flags


# -- 3. the image -------------------------------------------------------------------------------
def build(image: str, base: str | None, wheel: Path | None, volumes: list[str]) -> float:
    cmd = ["podman", "build", *RUNTIME, "--network", "host", "--format", "docker", "-t", image, "-f", str(ROOT / "Dockerfile")]
    if base:
        cmd += ["--build-arg", f"BASE={base}"]
    if wheel is not None:
        cmd += ["--volume", f"{wheel.parent}:/wheels:ro", "--build-arg", f"TORCH=/wheels/{wheel.name}", "--build-arg", "TORCH_INDEX="]
    cmd += [*volumes, str(ROOT)]
    say("podman build " + " ".join(a for a in cmd[2:] if not a.startswith("/")) + " ...")
    t = time.monotonic()
    res = run(cmd, timeout=2400, check=False)
    Path(ARGS.work / "build.log").write_text(res.stdout + res.stderr)
    if res.returncode != 0:
        raise CheckFailed(f"podman build failed (exit {res.returncode}); log: {ARGS.work / 'build.log'}\n{(res.stdout + res.stderr)[-3000:]}")
    return time.monotonic() - t


# -- 4. a run to serve --------------------------------------------------------------------------
def train_run(work: Path) -> Path:
    d = work / "run-src"
    if d.exists():
        shutil.rmtree(d)
    d.mkdir(parents=True)
    evorec = str(Path(sys.executable).parent / "evorec")
    run([evorec, "data", "simulate", "--users", "300", "--days", "60", "--seed", "1", "--out", str(d / "sim.parquet")], timeout=300)
    (d / "exp.yaml").write_text(json.dumps({
        "name": "image-test",
        "data": {"path": str(d / "sim.parquet"), "format": "parquet", "dataset": "imgsim", "pseudonymize": False},
        "prepare": {"clean": {"dedup": True, "kcore": {"user_min": 5, "item_min": 5}}, "split": {"kind": "loo"}},
        "model": {"name": "sasrec", "config": {"hidden": 16, "layers": 1, "heads": 1, "max_len": 20}},
        "train": {"epochs": 2, "batch_size": 128, "max_len": 20, "progress": False, "tensorboard": False, "eval_users": 200},
        "cache_dir": str(d / "cache"),
    }))
    run([evorec, "train", "--config", str(d / "exp.yaml"), "--out", str(d / "run")], timeout=900)
    for p in [d, *d.rglob("*")]:  # readable by the container's user
        p.chmod(0o755 if p.is_dir() else 0o644)
    return d / "run"


# -- 5-7. the container -------------------------------------------------------------------------
def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def container_checks(image: str, run_dir: Path, work: Path, report: dict) -> None:
    data = work / "data"
    if data.exists():
        shutil.rmtree(data)
    data.mkdir()
    os.chown(data, UID, UID)
    keydir = work / "key"
    keydir.mkdir(exist_ok=True)
    secret = secrets.token_hex(32)
    keyfile = keydir / "evorec_secret"
    keyfile.write_text(secret + "\n")
    keyfile.chmod(0o600)
    os.chown(keyfile, UID, UID)
    hardening = ["--read-only", "--cap-drop", "ALL", "--security-opt", "no-new-privileges", "--network", "host"]
    mounts = ["-v", f"{run_dir}:/models/run:ro", "-v", f"{data}:/data"]

    # 5. no key: must fail at start, saying why
    port = free_port()
    res = run(["podman", "run", "--rm", *RUNTIME, *hardening, *mounts, image, "serve", "--host", "127.0.0.1", "--port", str(port)],
              timeout=180, check=False)
    text = res.stdout + res.stderr
    report["no_secret_start"] = {"exit": res.returncode, "message": text.strip().splitlines()[-1][:300] if text.strip() else ""}
    check(res.returncode != 0, f"started without a key, the container exits non-zero (exit {res.returncode})")
    check("EVOREC_SECRET" in text, f"... and names the key it needs: {report['no_secret_start']['message']!r}")

    # 6. with the key
    name = f"evorec-image-test-{os.getpid()}"
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    t = time.monotonic()
    run(["podman", "run", "-d", "--name", name, *RUNTIME, *hardening, *mounts, "-v", f"{keyfile}:/run/secrets/evorec_secret:ro",
         image, "serve", "--host", "127.0.0.1", "--port", str(port)], timeout=120)
    try:
        ready = None
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{base}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if run(["podman", "container", "inspect", "-f", "{{.State.Running}}", name], timeout=30, check=False).stdout.strip() != "true":
                break
            time.sleep(0.2)
        cold = time.monotonic() - t
        if ready is None or ready.status_code != 200:
            logs = run(["podman", "logs", name], timeout=30, check=False)
            raise CheckFailed(f"not ready after {cold:.0f}s: {ready.text if ready is not None else 'no answer'}\n{(logs.stdout + logs.stderr)[-3000:]}")
        report["cold_start_seconds"] = round(cold, 2)
        check(ready.json().get("ready") is True, f"/readyz 200 after {cold:.1f}s (podman run to ready, model loaded)")
        check(httpx.get(f"{base}/healthz", timeout=5).status_code == 200, "/healthz 200")
        key = json.loads(run(["podman", "exec", name, "evorec", "keys", "create", "--role", "admin", "--json"], timeout=120).stdout)["key"]
        auth = {"Authorization": f"Bearer {key}"}
        check(httpx.get(f"{base}/v1/users/alice/recommendations?k=5", timeout=10).status_code == 401, "no key: 401")
        popular = httpx.get(f"{base}/v1/users/nobody/recommendations?k=5", headers=auth, timeout=10)
        check(popular.status_code == 200 and popular.json()["items"], "recommendations for a user without history (popularity)")
        items = [it["item_id"] for it in popular.json()["items"]]
        events = [{"event_id": f"img-{i}", "user_id": "alice", "item_id": it, "ts": 1_700_000_000 + i} for i, it in enumerate(items[:3])]
        posted = httpx.post(f"{base}/v1/events", headers=auth, json={"events": events}, timeout=10)
        check(posted.status_code == 200 and posted.json()["accepted"] == len(events), f"events posted: {posted.text[:200]}")
        recs = httpx.get(f"{base}/v1/users/alice/recommendations?k=5", headers=auth, timeout=10)
        got = [it["item_id"] for it in recs.json().get("items", [])]
        check(recs.status_code == 200 and len(got) == 5 and not set(got) & set(items[:3]),
              f"5 recommendations for alice, her own items excluded ({recs.json().get('model_version')})")
        check(httpx.get(f"{base}/v1/users/alice", headers=auth, timeout=10).status_code == 200, "alice is known")
        deleted = httpx.delete(f"{base}/v1/users/alice", headers=auth, timeout=10)
        check(deleted.status_code == 200, f"alice deleted: {deleted.text[:200]}")
        check(httpx.get(f"{base}/v1/users/alice", headers=auth, timeout=10).status_code == 404, "alice is gone (404)")
        uid = run(["podman", "exec", name, "id", "-u"], timeout=30).stdout.strip()
        check(uid == str(UID), f"the service runs as uid {uid}, not root")
        pid1 = run(["podman", "exec", name, "cat", "/proc/1/status"], timeout=30).stdout
        check(re.search(rf"^Uid:\s+{UID}\s", pid1, re.M) is not None, "process 1 (evorec serve) has uid 10001")
        cfg_user = run(["podman", "image", "inspect", "-f", "{{.Config.User}}", image], timeout=30).stdout.strip()
        check(cfg_user.split(":")[0] == str(UID), f"the image's default user is {cfg_user}")
        ro = run(["podman", "container", "inspect", "-f", "{{.HostConfig.ReadonlyRootfs}}", name], timeout=30).stdout.strip()
        write = run(["podman", "exec", name, "sh", "-c", "touch /opt/evorec/x || touch /home/evorec/x || echo refused"], timeout=30, check=False)
        check(ro == "true" and "Read-only file system" in write.stderr, "the root file system is read-only (writes refused)")
        caps = re.search(r"^CapEff:\s+(\w+)", pid1, re.M).group(1)
        check(int(caps, 16) == 0, f"no effective capabilities (CapEff {caps})")
        # the image's HEALTHCHECK command run in the container, on this test's port (8000 in the image)
        hc = json.loads(run(["podman", "image", "inspect", "-f", "{{json .Config.Healthcheck}}", image], timeout=30).stdout)
        argv = [a.replace(":8000/", f":{port}/") for a in hc["Test"][1:]]
        check(hc["Test"][0] == "CMD" and run(["podman", "exec", name, *argv], timeout=60, check=False).returncode == 0,
              "the image's HEALTHCHECK command passes in the container")
        logs = run(["podman", "logs", name], timeout=30, check=False)
        check("Traceback" not in logs.stdout + logs.stderr, "no traceback in the service's log")
    finally:
        run(["podman", "rm", "-f", "-t", "5", name], timeout=120, check=False)

    # 7. no secret in any layer
    hist = run(["podman", "history", "--no-trunc", "--format", "{{.CreatedBy}}", image], timeout=60).stdout
    check(secret not in hist and not re.search(r"EVOREC_SECRET=", hist), "podman history: no key, no EVOREC_SECRET value")
    env = run(["podman", "image", "inspect", "-f", "{{json .Config.Env}}", image], timeout=30).stdout
    check(not any(e.startswith("EVOREC_SECRET=") for e in json.loads(env)), "image environment: no EVOREC_SECRET")
    archive = work / "image.tar"
    archive.unlink(missing_ok=True)
    run(["podman", "save", "--format", "docker-archive", "-o", str(archive), image], timeout=900)
    try:
        found, layers, files = scan_layers(archive, secret.encode())
    finally:
        archive.unlink(missing_ok=True)
    report["layer_scan"] = {"layers": layers, "files": files, "findings": found}
    check(not found, f"{layers} layers, {files:,} files: no key bytes, no key file, no build pip configuration")


def scan_layers(archive: Path, secret: bytes) -> tuple[list[str], int, int]:
    found, layers, files = [], 0, 0
    bad_names = re.compile(r"(^|/)(evorec_secret|secret\.key|evorec-build/pip/.+)$")
    with tarfile.open(archive) as outer:
        for member in outer:
            if not member.isfile():
                continue
            f = outer.extractfile(member)
            if f is None:
                continue
            try:
                inner = tarfile.open(fileobj=f, mode="r|*")
            except tarfile.TarError:
                continue
            layers += 1
            for m in inner:
                if m.isfile() or m.issym():
                    files += 1
                    if bad_names.search(m.name):
                        found.append(f"{member.name}: {m.name}")
                if m.isfile() and m.size:
                    data = inner.extractfile(m).read()
                    if secret in data:
                        found.append(f"{member.name}: {m.name} holds the key")
    return found, layers, files


def main() -> int:
    global ARGS
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", type=Path, default=ROOT / ".image-build", help="git-ignored folder: base tarball, logs, report")
    ap.add_argument("--image", default="localhost/evorec:test")
    ap.add_argument("--base", default=None, help="use this base image instead of building one with mmdebstrap")
    ap.add_argument("--mirror", default="http://deb.debian.org/debian", help="Debian mirror for the base")
    ap.add_argument("--base-max-age-days", type=float, default=7.0, help="rebuild a cached base tarball older than this")
    ap.add_argument("--torch-wheel", type=Path, default=None, help="a local torch CPU wheel (else the CPU index)")
    ap.add_argument("--max-size-gb", type=float, default=1.5)
    ARGS = ap.parse_args()
    ARGS.work.mkdir(parents=True, exist_ok=True)
    report: dict = {"image": ARGS.image}
    try:
        for tool in ("podman", "runc") + (() if ARGS.base else ("mmdebstrap",)):
            if shutil.which(tool) is None:
                raise CheckFailed(f"{tool} is not installed (Debian: apt-get install podman runc mmdebstrap)")
        base = ARGS.base
        if base is None:
            rel = os_release()
            if rel.get("ID") != "debian":
                raise CheckFailed(f"no --base given and this is not Debian ({rel.get('ID')}): pass --base python:3.11-slim")
            base, report["base"] = base_image(ARGS.work, rel["VERSION_CODENAME"], ARGS.mirror, ARGS.base_max_age_days)
        wheel = ARGS.torch_wheel if ARGS.torch_wheel and ARGS.torch_wheel.is_file() else None
        if ARGS.torch_wheel and wheel is None:
            say(f"{ARGS.torch_wheel} not found: torch comes from the CPU index")
        report["build_seconds"] = round(build(ARGS.image, base, wheel, pip_context()), 1)
        size = int(run(["podman", "image", "inspect", "-f", "{{.Size}}", ARGS.image], timeout=30).stdout.strip())
        report["size_bytes"] = size
        say(f"built {ARGS.image} in {report['build_seconds']}s: {size / 1e9:.2f} GB")
        say("training a small SASRec on simulated data to serve")
        run_dir = train_run(ARGS.work)
        container_checks(ARGS.image, run_dir, ARGS.work, report)
        check(size < ARGS.max_size_gb * 1e9, f"image size {size / 1e9:.2f} GB < {ARGS.max_size_gb} GB")
        report["ok"] = True
    except CheckFailed as exc:
        report.update(ok=False, error=str(exc))
        say(f"FAILED: {exc}")
    report["total_seconds"] = round(time.monotonic() - T0, 1)
    (ARGS.work / "report.json").write_text(json.dumps(report, indent=2))
    say(f"report: {json.dumps({k: v for k, v in report.items() if k not in ('layer_scan',)})}")
    if report["ok"]:
        print(f"image-test: OK: size {report['size_bytes'] / 1e9:.2f} GB, build {report['build_seconds']}s, "
              f"cold start {report['cold_start_seconds']}s, total {report['total_seconds']}s")
    else:
        print(f"image-test: FAILED (report: {ARGS.work / 'report.json'})")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
