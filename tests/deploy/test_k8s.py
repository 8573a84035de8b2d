"""deploy/k8s, checked offline: every manifest against the Kubernetes OpenAPI schemas
(kubernetes-validate, strict: unknown fields fail) and through a static policy check (checkov, in
its own environment: its pins would downgrade networkx and packaging under torch; the Makefile's
`venv-policy`) with no failed check and only the documented skips; the Deployment agrees with the
service (probes, port, variables, Secret keys) and the serving benchmark's sizing. Mutated copies
(a missing limit, root, a writable root file system, capabilities kept, an invalid field) must fail."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
NOT_MANIFESTS = {"kustomization.yaml"}
VERSIONS = ("1.30.0", "1.37.0")  # oldest Kubernetes release still supported by its vendors here .. newest the package ships
ALLOWED_SKIPS = {"CKV_K8S_35", "CKV_K8S_43"}  # reasons in the annotations (and docs/deploy.md)
WORKLOADS = {"Deployment", "CronJob"}


def manifests(folder: Path) -> list[tuple[str, dict]]:
    out = []
    for f in sorted(folder.rglob("*.yaml")):
        if f.name in NOT_MANIFESTS:
            continue
        for doc in yaml.safe_load_all(f.read_text()):
            if doc:
                out.append((str(f.relative_to(folder)), doc))
    return out


def schema_errors(folder: Path) -> list[str]:
    import kubernetes_validate

    errors = []
    try:
        docs = manifests(folder)
    except yaml.YAMLError as exc:
        return [f"YAML: {exc}"]
    for name, doc in docs:
        for version in VERSIONS:
            try:
                kubernetes_validate.validate(doc, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = f"{name} {doc.get('kind')}/{doc.get('metadata', {}).get('name')} (Kubernetes {version})"
                errors.append(f"{where}: {exc.message} at {'.'.join(map(str, exc.path))}")
            except kubernetes_validate.SchemaNotFoundError as exc:
                errors.append(f"{name}: no schema for {doc.get('apiVersion')} {doc.get('kind')} in Kubernetes {version} ({exc})")
    return errors


def checkov() -> str:
    exe = os.environ.get("EVOREC_CHECKOV")
    if exe:
        if not Path(exe).exists():
            pytest.fail(f"EVOREC_CHECKOV={exe} does not exist (make venv-policy)")
        return exe
    local = ROOT / ".venv-policy" / "bin" / "checkov"
    if local.exists():
        return str(local)
    found = shutil.which("checkov")
    if found is None:
        pytest.skip("checkov not installed: `make venv-policy` (make test does it)")
    return found


def policy_report(folder: Path) -> dict:
    res = subprocess.run([checkov(), "-d", str(folder), "--framework", "kubernetes", "--skip-download", "-o", "json"],
                         capture_output=True, text=True, timeout=600, check=False)
    assert res.returncode in (0, 1), res.stderr[-2000:]  # 1: failed checks
    report = json.loads(res.stdout)
    return report[0] if isinstance(report, list) else report


def findings(report: dict, folder: Path) -> list[str]:
    """Failed checks, parsing errors, and workloads checkov did not check at all (a file it could
    not read is otherwise silently left out)."""
    r = report.get("results", {})
    out = [f"{c['check_id']} {c['resource']} ({c['file_path']}): {c['check_name']}" for c in r.get("failed_checks", [])]
    out += [f"parsing error: {p}" for p in r.get("parsing_errors", [])]
    checked = {c["resource"] for kind in ("passed_checks", "failed_checks", "skipped_checks") for c in r.get(kind, [])}
    for name, doc in manifests(folder):
        if doc.get("kind") in WORKLOADS:
            rid = f"{doc['kind']}.{doc['metadata'].get('namespace', 'default')}.{doc['metadata']['name']}"
            if rid not in checked:
                out.append(f"{rid} ({name}) was not checked")
    return out


def own_rules(folder: Path) -> list[str]:
    """What the issue names explicitly, checked by hand too: requests and limits on every container."""
    out = []
    for name, doc in manifests(folder):
        spec = pod_spec(doc)
        for c in (spec or {}).get("containers", []):
            res = c.get("resources", {})
            for part in ("requests", "limits"):
                for r in ("cpu", "memory"):
                    if r not in res.get(part, {}):
                        out.append(f"{name} {doc['kind']}/{doc['metadata']['name']} container {c['name']}: no {part}.{r}")
    return out


def pod_spec(doc: dict) -> dict | None:
    if doc.get("kind") == "Deployment":
        return doc["spec"]["template"]["spec"]
    if doc.get("kind") == "CronJob":
        return doc["spec"]["jobTemplate"]["spec"]["template"]["spec"]
    return None


def by_kind(kind: str, folder: Path = K8S) -> list[dict]:
    return [d for _, d in manifests(folder) if d.get("kind") == kind]


# -- the shipped manifests -----------------------------------------------------------------------
def test_every_manifest_is_valid_against_the_kubernetes_schemas():
    kinds = {d["kind"] for _, d in manifests(K8S)}
    assert {"Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "CronJob", "NetworkPolicy",
            "Secret", "ServiceAccount", "Namespace", "PersistentVolumeClaim", "ConfigMap"} <= kinds
    assert schema_errors(K8S) == []
    assert own_rules(K8S) == []


def test_the_policy_check_finds_nothing_and_skips_only_what_is_documented():
    report = policy_report(K8S)
    assert findings(report, K8S) == []
    assert report["summary"]["passed"] >= 200, report["summary"]
    skipped = report["results"].get("skipped_checks", [])
    assert {c["check_id"] for c in skipped} <= ALLOWED_SKIPS, skipped
    for c in skipped:
        assert len((c.get("check_result") or {}).get("suppress_comment") or "") > 30, f"{c['check_id']}: give the reason"


def test_the_deployment_agrees_with_the_service_and_the_sizing():
    from evorec.serving.app import create_app
    from evorec.serving.settings import ServeSettings

    (dep,) = by_kind("Deployment")
    spec = pod_spec(dep)
    (c,) = spec["containers"]
    # the app's paths as served (its routes sit in included routers: app.routes lists the routers)
    routes = set(create_app(ServeSettings(run=None, db_url="sqlite://", pseudonymize=False)).openapi()["paths"])
    assert c["livenessProbe"]["httpGet"]["path"] == "/healthz" and c["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"/healthz", "/readyz"} <= routes
    expose = re.search(r"^EXPOSE (\d+)", (ROOT / "Dockerfile").read_text(), re.M).group(1)
    assert str(c["ports"][0]["containerPort"]) == expose
    env = {e["name"]: e for e in c["env"]}
    prefix = ServeSettings.model_config["env_prefix"]
    known = {prefix + n.upper() for n in ServeSettings.model_fields} | {"EVOREC_SECRET", "EVOREC_SECRET_FILE"}
    assert set(env) <= known, set(env) - known
    (secret,) = by_kind("Secret")
    for name in ("EVOREC_SECRET", "EVOREC_SERVE_DB_URL"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["name"] == secret["metadata"]["name"] and ref["key"] in secret["stringData"], name
    # sizing: benchmarks/README.md "Serving under load": ~0.36 core at 200 req/s, ~390 MB resident
    assert c["resources"] == {"requests": {"cpu": "500m", "memory": "512Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}}
    sc, psc = c["securityContext"], spec["securityContext"]
    assert psc["runAsNonRoot"] and psc["runAsUser"] == 10001 and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
    assert sc["capabilities"]["drop"] == ["ALL"] and spec["automountServiceAccountToken"] is False
    labels = dep["spec"]["template"]["metadata"]["labels"]
    (pdb,) = by_kind("PodDisruptionBudget")
    (hpa,) = by_kind("HorizontalPodAutoscaler")
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()
    assert hpa["spec"]["scaleTargetRef"]["name"] == dep["metadata"]["name"] and hpa["spec"]["minReplicas"] >= 2
    api_policies = [p for p in by_kind("NetworkPolicy") if p["spec"]["podSelector"].get("matchLabels", {}).items() <= labels.items()]
    assert any("Ingress" in p["spec"]["policyTypes"] and p["spec"].get("ingress") for p in api_policies)
    for job in by_kind("CronJob"):
        assert job["spec"]["concurrencyPolicy"] == "Forbid"
        args = pod_spec(job)["containers"][0]["args"][0]
        assert re.search(r"evorec (train|forecast backtest) --config /config/\S+\.yaml --out", args)
    kust = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    files = {f.name for f in K8S.glob("*.yaml")} - NOT_MANIFESTS - {"secret.example.yaml"}
    assert set(kust["resources"]) == files, "kustomization.yaml lists every manifest but the Secret example"


# -- mutated copies must fail --------------------------------------------------------------------
def _container(doc: dict) -> dict:
    return pod_spec(doc)["containers"][0]


MUTATIONS = {  # name: (mutation of the Deployment, what must report it)
    "no-memory-limit": (lambda d: _container(d)["resources"]["limits"].pop("memory"), "CKV_K8S_13"),
    "no-cpu-limit": (lambda d: _container(d)["resources"]["limits"].pop("cpu"), "CKV_K8S_11"),
    "root": (lambda d: (pod_spec(d)["securityContext"].update(runAsNonRoot=False, runAsUser=0),
                        _container(d)["securityContext"].update(runAsNonRoot=False, runAsUser=0)), "CKV_K8S_23"),
    "writable-root": (lambda d: _container(d)["securityContext"].update(readOnlyRootFilesystem=False), "CKV_K8S_22"),
    "capabilities-kept": (lambda d: _container(d)["securityContext"].pop("capabilities"), "CKV_K8S_37"),
    "privilege-escalation": (lambda d: _container(d)["securityContext"].update(allowPrivilegeEscalation=True), "CKV_K8S_20"),
}


def test_mutated_deployments_fail_the_policy_check(tmp_path):
    (dep,) = by_kind("Deployment")
    for name, (mutate, _) in MUTATIONS.items():
        d = copy.deepcopy(dep)
        mutate(d)
        d["metadata"]["name"] = f"evorec-{name}"
        (tmp_path / name).mkdir()
        (tmp_path / name / "deployment.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    report = policy_report(tmp_path)
    found = findings(report, tmp_path)
    for name, (_, check_id) in MUTATIONS.items():
        assert any(f.startswith(f"{check_id} Deployment.evorec.evorec-{name} ") for f in found), (name, check_id, found)
    failing = {f.split()[1] for f in found if f.split()[1].startswith("Deployment.")}
    assert failing == {f"Deployment.evorec.evorec-{n}" for n in MUTATIONS}, "every mutated copy fails"
    assert any("no limits.memory" in f for f in own_rules(tmp_path / "no-memory-limit"))
    assert any("no limits.cpu" in f for f in own_rules(tmp_path / "no-cpu-limit"))


def test_an_unparseable_manifest_is_not_silently_skipped(tmp_path):
    (dep,) = by_kind("Deployment")
    good = yaml.safe_dump(dep, sort_keys=False)
    (tmp_path / "deployment.yaml").write_text(good.replace("  annotations:\n", "  annotations:\n    broken: a: b\n", 1))
    assert schema_errors(tmp_path)[0].startswith("YAML:")


@pytest.mark.parametrize("mutate, message", [
    (lambda d: d["spec"].update(replicas="two"), "is not of type 'integer'"),
    (lambda d: _container(d).update(imagePullPolicyy="Always"), "imagePullPolicyy"),  # a typo: strict schemas refuse it
    (lambda d: d.update(apiVersion="apps/v1beta1"), "no schema"),  # removed API
    (lambda d: _container(d).pop("image") and _container(d).pop("name"), "'name' is a required property"),
])
def test_invalid_deployments_fail_the_schema_check(tmp_path, mutate, message):
    (dep,) = by_kind("Deployment")
    d = copy.deepcopy(dep)
    mutate(d)
    (tmp_path / "deployment.yaml").write_text(yaml.safe_dump(d, sort_keys=False))
    errors = schema_errors(tmp_path)
    assert errors and any(message in e for e in errors), errors
