"""The container and its guide, checked statically and by simulation here (`make image-test`
builds and runs the real image with Podman): the Dockerfile is read statically, and what it would
run is run here -- its ENTRYPOINT + CMD with its ENV (container paths mapped to temporary ones)
start a real server, and its HEALTHCHECK command passes against it and fails once it is gone. The
drift test keeps every EVOREC_* variable in the Dockerfile and docs/deploy.md in step with
ServeSettings."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import httpx
import live_server
import pytest
import tomllib

from evorec.serving.settings import ServeSettings

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
GUIDE = ROOT / "docs" / "deploy.md"
SECRET_VARS = {"EVOREC_SECRET", "EVOREC_SECRET_FILE"}  # evorec.utils.privacy
TRACKING_VARS = {"EVOREC_MLFLOW_URI"}  # evorec.utils.tracking: where `--run runs:/ID/run` is downloaded from


def instructions() -> list[tuple[str, str]]:
    """(KEYWORD, arguments) of the Dockerfile, continuation lines joined, comments dropped."""
    out, buf = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not buf and (not line.strip() or line.lstrip().startswith("#")):
            continue
        if buf and line.lstrip().startswith("#"):  # a comment inside a continued instruction
            continue
        if line.rstrip().endswith("\\"):
            buf += line.rstrip()[:-1] + " "
            continue
        full = (buf + line).strip()
        buf = ""
        key, _, rest = full.partition(" ")
        out.append((key.upper(), rest.strip()))
    return out


def one(keyword: str) -> str:
    found = [a for k, a in instructions() if k == keyword]
    assert len(found) == 1, f"expected one {keyword} in the Dockerfile, found {len(found)}"
    return found[0]


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for k, a in instructions():
        if k == "ENV":
            for part in shlex.split(a):
                name, eq, value = part.partition("=")
                assert eq, f"ENV {part!r}: use the NAME=value form"
                env[name] = value
    return env


def env_names(text: str) -> set[str]:
    return set(re.findall(r"\bEVOREC_[A-Z0-9_]*[A-Z0-9]\b", text))


def known_vars() -> set[str]:
    prefix = ServeSettings.model_config["env_prefix"]
    return {prefix + name.upper() for name in ServeSettings.model_fields} | SECRET_VARS | TRACKING_VARS


# -- the Dockerfile, statically ----------------------------------------------------------------


def test_torch_pinned_and_installed_before_the_project():
    runs = [a for k, a in instructions() if k == "RUN"]
    args = dict(a.split("=", 1) for k, a in instructions() if k == "ARG" and "=" in a)
    assert args["BASE"] == "python:3.11-slim", "the standard base for users (make image-test passes its own)"
    assert [a for k, a in instructions() if k == "FROM"] == ["${BASE} AS build", "${BASE}"], "two stages on one base"
    pin = re.search(r"TORCH := (torch==\S+)", (ROOT / "Makefile").read_text()).group(1)
    assert args["TORCH"] == pin, f"the Dockerfile's torch {args['TORCH']} is not the Makefile's pin {pin}"
    assert args["TORCH_INDEX"] == "https://download.pytorch.org/whl/cpu", "torch must come from the CPU index"
    torch_at = [i for i, a in enumerate(runs) if "pip install" in a and '"$TORCH"' in a]
    assert torch_at and '--index-url "$TORCH_INDEX"' in runs[torch_at[0]], "no RUN pip install of $TORCH from $TORCH_INDEX"
    project_at = [i for i, a in enumerate(runs) if re.search(r"pip install (--no-compile )?['\"]?\.\[", a)]
    assert project_at and torch_at[0] < project_at[0], "torch must be installed before the project (else pip pulls a CUDA torch)"
    extras = re.search(r"pip install (?:--no-compile )?['\"]?\.\[([a-z,]+)\]", runs[project_at[0]]).group(1).split(",")
    declared = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert extras == ["serve"] and set(extras) <= set(declared)
    assert "test" not in extras and "export" not in extras, "the image serves: no test or export extras"
    assert not any("torch" in a.split("pip install", 1)[1] for a in runs[project_at[0] + 1 :] if "pip install" in a), \
        "nothing may reinstall torch after"


def test_runs_as_non_root_exposes_8000_and_bakes_no_secret():
    user = one("USER").split(":")[0]
    assert user not in ("root", "0"), "the service must not run as root"
    assert one("EXPOSE") == "8000"
    env = image_env()
    assert "EVOREC_SECRET" not in env, "the key must come at run time, never in the image"
    assert env["EVOREC_SECRET_FILE"].startswith("/run/secrets/"), "a file the user cannot create: no key, no start"
    text = DOCKERFILE.read_text()
    assert not re.search(r"^\s*(ARG|ENV)\s+EVOREC_SECRET\b(?!_FILE)", text, re.MULTILINE)
    steps = instructions()
    final = max(i for i, (k, _) in enumerate(steps) if k == "FROM")
    copies = [a for k, a in steps[:final] if k in ("COPY", "ADD")]
    sources = {s for a in copies for s in a.split()[:-1] if not s.startswith("--")}
    assert sources <= {"pyproject.toml", "README.md", "src", "docker/pip/"}, f"copies more than the package sources: {sources}"
    # the service stage takes only the built environment from the first: no pip configuration, no sources
    final_copies = [a for k, a in steps[final:] if k in ("COPY", "ADD")]
    assert final_copies == ["--from=build /opt/evorec /opt/evorec"], final_copies


def test_entrypoint_and_cmd_are_a_valid_evorec_command_line():
    entry, cmd = json.loads(one("ENTRYPOINT")), json.loads(one("CMD"))
    assert entry == ["evorec"] and cmd[0] == "serve"
    env = live_server.clean_env(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    out = subprocess.run([live_server.evorec_exe(), *cmd[:1], "--help"], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    offered = set(re.findall(r"(?<![\w-])--[a-z][a-z0-9-]*", out.stdout))
    used = {a for a in cmd[1:] if a.startswith("--")}
    assert used and used <= offered, f"options the CLI does not have: {used - offered}"
    assert cmd[cmd.index("--port") + 1] == one("EXPOSE") and cmd[cmd.index("--host") + 1] == "0.0.0.0"


# -- every EVOREC_* variable exists (doc drift) ------------------------------------------------


def test_every_evorec_variable_in_the_dockerfile_and_guide_exists():
    # the guide's Kubernetes section also names the training jobs' cache (read by evorec.experiments.config)
    assert 'os.environ.get("EVOREC_CACHE"' in (ROOT / "src" / "evorec" / "experiments" / "config.py").read_text()
    known = known_vars() | {"EVOREC_CACHE"}
    for path in (DOCKERFILE, GUIDE):
        unknown = env_names(path.read_text()) - known
        assert not unknown, f"{path.name} names variables the service does not read: {sorted(unknown)}"
    assert set(image_env()) - {"PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "PIP_NO_CACHE_DIR",
                               "PIP_DISABLE_PIP_VERSION_CHECK", "OMP_NUM_THREADS", "PATH"} <= known


def _cell(s: str) -> str:
    return s.strip().strip("`")


def _default(v) -> str:
    if v is None:
        return "unset"
    if isinstance(v, bool):
        return str(v).lower()
    return str(v)


def test_guide_table_lists_every_setting_with_its_default_and_the_image_value():
    rows = {}
    for line in GUIDE.read_text().splitlines():
        m = re.match(r"^\| `(EVOREC_[A-Z0-9_]+)` \|(.*)\|$", line)
        if m:
            cells = m.group(2).split("|")
            assert len(cells) == 3, line
            rows[m.group(1)] = [_cell(c) for c in cells]
    assert set(rows) == known_vars(), f"table vs settings: missing {known_vars() - set(rows)}, extra {set(rows) - known_vars()}"
    prefix = ServeSettings.model_config["env_prefix"]
    for name, field in ServeSettings.model_fields.items():
        default, _, _ = rows[prefix + name.upper()]
        assert default == _default(field.default), f"{prefix + name.upper()}: the guide says {default!r}, the code {field.default!r}"
    image = image_env()
    for var, (_, in_image, _) in rows.items():
        assert in_image == image.get(var, "—"), f"{var}: the guide says the image sets {in_image!r}, the Dockerfile {image.get(var)!r}"
    assert rows["EVOREC_SECRET"][0] == "unset" and rows["EVOREC_SECRET_FILE"][0] == "~/.evorec/secret.key"


def test_readme_links_the_guide():
    assert "(docs/deploy.md)" in (ROOT / "README.md").read_text()


# -- the container's command and health check, simulated --------------------------------------


def healthcheck(port: int) -> subprocess.CompletedProcess:
    spec = one("HEALTHCHECK")
    argv = json.loads(spec[spec.index("CMD ") + 4 :])
    assert argv[0] == "python" and "/healthz" in argv[-1] and ":8000/" in argv[-1]
    argv = [sys.executable, *argv[1:-1], argv[-1].replace(":8000/", f":{port}/")]
    return subprocess.run(argv, check=False, capture_output=True, text=True, timeout=30, env=live_server.clean_env())


def test_container_command_serves_and_the_healthcheck_tells_up_from_down(trained_run, tmp_path):
    # The image's ENV with its container paths mapped to local ones (the volumes of `docker run`).
    secret = tmp_path / "secret"
    secret.write_text("deploy-test-key-0123456789abcdef\n")
    os.chmod(secret, 0o600)
    (tmp_path / "data").mkdir()
    mounts = {"/models/run": str(trained_run), "/data/": f"{tmp_path / 'data'}/", "/run/secrets/evorec_secret": str(secret)}
    env = live_server.clean_env()
    for k, v in image_env().items():
        if k == "PATH":  # the image's virtual environment first; here the test's interpreter is used
            continue
        for inside, outside in mounts.items():
            v = v.replace(inside, outside)
        env[k] = v
    assert env["EVOREC_SERVE_RUN"] == str(trained_run), "the run must come from EVOREC_SERVE_RUN"
    cmd = json.loads(one("CMD"))
    port = live_server.free_port()
    cmd[cmd.index("--port") + 1] = str(port)
    cmd[cmd.index("--host") + 1] = "127.0.0.1"  # the container binds 0.0.0.0; a test binds loopback
    server = live_server.start(cmd, env, tmp_path / "serve.log", port)  # ENTRYPOINT evorec + CMD, nothing else
    try:
        ready = httpx.get(f"{server.base}/readyz", timeout=10)
        assert ready.status_code == 200 and ready.json()["model_version"].startswith(Path(trained_run).name), ready.text
        assert (tmp_path / "data" / "evorec-serve.db").exists(), "the SQLite store belongs on the /data volume"
        key = live_server.create_key("write", env["EVOREC_SERVE_DB_URL"], env)
        r = httpx.post(f"{server.base}/v1/events", headers={"Authorization": f"Bearer {key}"}, timeout=10,
                       json={"events": [{"event_id": "d1", "user_id": "alice", "item_id": "x", "ts": 1_700_000_000}]})
        assert r.status_code == 200 and r.json()["accepted"] == 1, r.text
        up = healthcheck(port)
        assert up.returncode == 0, up.stderr
    finally:
        server.kill()
    down = healthcheck(port)
    assert down.returncode != 0, "the health check passed with the server gone"


# -- .dockerignore -----------------------------------------------------------------------------


def dockerignored(rel: str, patterns: list[str]) -> bool:
    """Docker's rule: a pattern matches a path or any of its parent directories (``**`` any depth,
    ``*`` within one name); the last matching pattern wins, ``!`` re-includes."""
    parts = rel.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for raw in patterns:
        neg = raw.startswith("!")
        pat = raw[1:] if neg else raw
        pat = pat.strip("/")
        rx = ""
        i = 0
        while i < len(pat):
            if pat.startswith("**/", i):
                rx, i = rx + "(?:.*/)?", i + 3
            elif pat.startswith("**", i):
                rx, i = rx + ".*", i + 2
            elif pat[i] == "*":
                rx, i = rx + "[^/]*", i + 1
            elif pat[i] == "?":
                rx, i = rx + "[^/]", i + 1
            elif pat[i] == "[":
                j = pat.index("]", i)
                rx, i = rx + pat[i : j + 1], j + 1
            else:
                rx, i = rx + re.escape(pat[i]), i + 1
        if any(re.fullmatch(rx, c) for c in candidates):
            excluded = not neg
    return excluded


def test_dockerignore_keeps_environments_and_data_out_and_the_sources_in():
    patterns = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines() if ln.strip() and not ln.startswith("#")]
    out = [".venv/bin/python", ".git/HEAD", "runs/sasrec/best.pt", "demo_out/store.duckdb", ".evorec-cache/prepared/x/meta.json",
           "benchmarks/scratch/serve_load/serve.db", "test-artifacts/serve_crash_sqlite.json", "evorec-serve.db",
           "data/shop.duckdb", "somewhere/events.parquet", "somewhere/ml-100k.inter", "secret.key", "demo_out/secret.key",
           "src/evorec/__pycache__/types.cpython-311.pyc"]
    leaked = [p for p in out if not dockerignored(p, patterns)]
    assert not leaked, f"in the build context: {leaked}"
    tracked = subprocess.run(["git", "ls-files", "src"], check=False, cwd=ROOT, capture_output=True, text=True)
    if tracked.returncode != 0:
        pytest.skip("not a git checkout: cannot list the package sources")
    needed = ["pyproject.toml", "README.md", *tracked.stdout.split()]
    assert len(needed) > 50
    missing = [p for p in needed if dockerignored(p, patterns)]
    assert not missing, f"the image needs these but .dockerignore drops them: {missing}"


@pytest.mark.parametrize("rel, pats, want", [
    ("a/b/c.db", ["**/*.db"], True), ("c.db", ["**/*.db"], True), ("runs/x/y", ["runs"], True),
    ("src/runs.py", ["runs"], False), ("x/secret.key", ["**/*.key", "!x/secret.key"], False),
])
def test_dockerignore_matcher(rel, pats, want):
    assert dockerignored(rel, pats) is want
