#!/usr/bin/env python3
"""The deployment checks scripts/check-deploy runs (with its virtualenv's python):

    check-deploy.py k8s RENDERED.yaml...   every object of each rendered overlay validated
                                           strictly, then the policy test (and, on the local
                                           overlay, the policy test's own test: each of a list
                                           of breakages must make it fail)
    check-deploy.py compose                docker-compose.yml and deploy/local/stack define
                                           the same services and ports; healthchecks, secrets
                                           from .env, scalable workers (and the check's own
                                           test, as above)

Each violation is printed on a line of its own; the exit status is 1 when there is any.
"""
import copy
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import jsonschema
import yaml

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
# Kubernetes versions every object must validate against: the oldest still supported by the
# big clouds' managed offerings, and the newest kubernetes-validate knows.
KUBERNETES_VERSIONS = ["1.30.0", "1.37.0"]
# Custom resources, validated against the CRD schemas committed in deploy/k8s/schemas/
# (from github.com/datreeio/CRDs-catalog: Prometheus Operator's and KEDA's own CRDs).
CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "servicemonitor_v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): "prometheusrule_v1.json",
    ("keda.sh/v1alpha1", "ScaledObject"): "scaledobject_v1alpha1.json",
}
ADAPTER_VALUES = ROOT / "deploy/k8s/prometheus-adapter/values.yaml"
# Our own workloads: what the policy applies to (the local overlay's backing services are
# dev-only stand-ins running upstream images).
OURS = ("app.kubernetes.io/name", "scaleout")

problems: list[str] = []


def fail(where: str, message: str) -> None:
    problems.append(f"{where}: {message}")


def name(obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


# --- strict schema validation -----------------------------------------------------------------

def validate_schemas(label: str, objects: list[dict], quiet: bool = False) -> None:
    before = len(problems)
    core, custom = [], {}
    for obj in objects:
        key = (obj.get("apiVersion"), obj.get("kind"))
        if key in CRD_SCHEMAS:
            custom.setdefault(CRD_SCHEMAS[key], []).append(obj)
        elif "." in key[0].split("/")[0] and not key[0].split("/")[0].endswith(".k8s.io"):
            # A custom resource without a committed schema would pass unvalidated.
            fail(label, f"{name(obj)}: no schema for {key[0]} {key[1]} in deploy/k8s/schemas/")
        else:
            core.append(obj)
    with tempfile.TemporaryDirectory() as work:
        core_file = Path(work) / f"{label}.yaml"
        core_file.write_text(yaml.safe_dump_all(core, sort_keys=False))
        for version in KUBERNETES_VERSIONS:
            run = subprocess.run(
                [BIN / "kubernetes-validate", "--strict", "--quiet", "-k", version, core_file],
                capture_output=True, text=True)
            # Warnings (a kind it has no schema for) count as failures too: every core object
            # must have been validated.
            for line in (run.stdout + run.stderr).splitlines():
                if line.strip():
                    fail(label, f"kubernetes-validate {version}: {line.strip()}")
            if run.returncode != 0 and not (run.stdout + run.stderr).strip():
                fail(label, f"kubernetes-validate {version} exited {run.returncode}")
        for schema, objs in custom.items():
            # With the jsonschema library rather than check-jsonschema: the latter first checks
            # the schema against its metaschema, and the Prometheus Operator's CRD schema has a
            # Go regex ("^(?i)(abort|warn)?$") that no Python or ECMAScript dialect accepts.
            # Its pattern only applies to a field these manifests do not use.
            document = json.loads((ROOT / "deploy/k8s/schemas" / schema).read_text())
            validator = jsonschema.Draft7Validator(
                document, format_checker=jsonschema.Draft7Validator.FORMAT_CHECKER)
            for obj in objs:
                for error in validator.iter_errors(obj):
                    path = ".".join(str(p) for p in error.absolute_path)
                    fail(label, f"{name(obj)} against {schema}: {path}: {error.message}")
        if quiet or len(problems) > before:
            return
        print(f"check-deploy: {label}: {len(core)} objects valid against Kubernetes "
              f"{', '.join(KUBERNETES_VERSIONS)} (strict), "
              f"{sum(map(len, custom.values()))} custom resources against their CRD schemas")


# --- policy -------------------------------------------------------------------------------------

def selects(selector: dict, labels: dict) -> bool:
    match = selector.get("matchLabels", {})
    if selector.get("matchExpressions"):
        return False  # not used here; refuse rather than guess
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def seconds(env: dict, key: str, where: str) -> int:
    if key not in env:
        fail(where, f"{key} is not set in the ConfigMap the pods read")
        return 0
    return int(env[key])


def container_env(obj: dict, container: dict, by_kind_name: dict) -> dict:
    """The environment a container gets from its ConfigMaps and explicit env (not Secrets)."""
    env = {}
    for source in container.get("envFrom", []):
        ref = source.get("configMapRef")
        if ref:
            cm = by_kind_name.get(("ConfigMap", ref["name"]))
            if cm is None:
                fail(name(obj), f"envFrom names ConfigMap {ref['name']}, which the overlay lacks")
            else:
                env.update(cm.get("data", {}))
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = item["value"]
    return env


def check_security(where: str, pod: dict, container: dict) -> None:
    psc, csc = pod.get("securityContext", {}), container.get("securityContext", {})
    if not (csc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        fail(where, "runAsNonRoot is not true")
    uid = csc.get("runAsUser", psc.get("runAsUser"))
    if uid != 10001:
        fail(where, f"runAsUser is {uid}, not the image's user 10001")
    if csc.get("readOnlyRootFilesystem") is not True:
        fail(where, "readOnlyRootFilesystem is not true")
    if csc.get("allowPrivilegeEscalation") is not False:
        fail(where, "allowPrivilegeEscalation is not false")
    if "ALL" not in csc.get("capabilities", {}).get("drop", []) or csc.get("capabilities", {}).get("add"):
        fail(where, "capabilities: not every one dropped (drop: [ALL], no add)")
    seccomp = csc.get("seccompProfile", psc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        fail(where, "seccompProfile is not RuntimeDefault")


def check_resources(where: str, container: dict) -> None:
    res = container.get("resources", {})
    for kind, key in (("requests", "cpu"), ("requests", "memory"), ("limits", "memory")):
        if key not in res.get(kind, {}):
            fail(where, f"resources.{kind}.{key} is not set")


def check_probes(where: str, container: dict, readiness: str) -> None:
    ports = {p.get("name"): p["containerPort"] for p in container.get("ports", [])}
    expected = {"livenessProbe": "/health", "readinessProbe": readiness, "startupProbe": "/health"}
    for probe, path in expected.items():
        spec = container.get(probe)
        if not spec:
            fail(where, f"no {probe}")
            continue
        http = spec.get("httpGet")
        if not http or http.get("path") != path:
            fail(where, f"{probe} is not an HTTP GET of {path}")
            continue
        port = http.get("port")
        if isinstance(port, str) and port not in ports:
            fail(where, f"{probe} names port {port}, which the container does not declare")


def check_hpa_behavior(where: str, behavior: dict) -> None:
    up, down = behavior.get("scaleUp", {}), behavior.get("scaleDown", {})
    # Out fast: no stabilisation, and some policy that at least doubles within 15 s.
    if up.get("stabilizationWindowSeconds") != 0:
        fail(where, "scaleUp.stabilizationWindowSeconds is not 0")
    if up.get("selectPolicy") == "Disabled":
        fail(where, "scaleUp is disabled")
    if up.get("selectPolicy", "Max") != "Max" and len(up.get("policies", [])) > 1:
        fail(where, "scaleUp.selectPolicy is not Max: the slowest policy would win")
    if not any(p["type"] == "Percent" and p["value"] >= 100 and p["periodSeconds"] <= 15
               for p in up.get("policies", [])):
        fail(where, "no scaleUp policy doubles the pods within 15 s")
    # In slowly: 5 minutes of stability, then at most 10 % a minute, whichever policy applies.
    if down.get("stabilizationWindowSeconds", 300) < 300:
        fail(where, "scaleDown.stabilizationWindowSeconds is under 300")
    policies = down.get("policies", [])
    if not policies or down.get("selectPolicy") == "Disabled":
        fail(where, "scaleDown has no policy (the default removes 100 % every 15 s)")
    for p in policies:
        # As a rate: at most 10 % per 60 s, whatever the period.
        if p["type"] != "Percent" or p["value"] / p["periodSeconds"] > 10 / 60:
            fail(where, f"scaleDown policy {p} allows more than 10 % a minute")
    if len(policies) > 1 and down.get("selectPolicy") != "Min":
        fail(where, "scaleDown.selectPolicy is not Min with several policies")


def check_policy(label: str, objects: list[dict]) -> None:
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    of_kind = lambda kind: [o for o in objects if o["kind"] == kind]  # noqa: E731
    ours = [o for o in objects if o["kind"] in ("Deployment", "Job", "StatefulSet", "DaemonSet")
            and o["metadata"].get("labels", {}).get(OURS[0]) == OURS[1]]
    deployments = [o for o in ours if o["kind"] == "Deployment"]
    if {d["metadata"]["name"] for d in deployments} != {"scaleout-serve", "scaleout-worker"}:
        fail(label, "the overlay does not have exactly the serve and worker Deployments")
    if not any(o["kind"] == "Job" for o in ours):
        fail(label, "no migrate Job")
    # Every namespaced object in one namespace: an overlay's own additions (backing services,
    # their Secrets) left without one land in the kubectl context's namespace, where the
    # instances cannot find them by short name.
    cluster_scoped = {"Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
                      "APIService", "PriorityClass", "StorageClass", "IngressClass"}
    namespaces = {o["metadata"].get("namespace") for o in objects if o["kind"] not in cluster_scoped}
    if len(namespaces) != 1 or None in namespaces:
        fail(label, f"namespaced objects are not all in one namespace: {sorted(map(str, namespaces))}")

    # Pods that receive traffic from the Ingress: the pods behind the Services it routes to.
    routed_selectors = []
    for ing in of_kind("Ingress"):
        for rule in ing["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                svc = by_kind_name.get(("Service", path["backend"]["service"]["name"]))
                if svc is None:
                    fail(name(ing), f"routes to Service {path['backend']['service']['name']}, which is missing")
                else:
                    routed_selectors.append(svc["spec"]["selector"])
                if path["path"].startswith(("/ready", "/metrics")):
                    fail(name(ing), f"{path['path']} must not be public")

    for obj in ours:
        pod = obj["spec"]["template"]["spec"]
        labels = obj["spec"]["template"]["metadata"].get("labels", {})
        for c in pod.get("initContainers", []) + pod["containers"]:
            where = f"{label}: {name(obj)} container {c['name']}"
            check_security(where, pod, c)
            check_resources(where, c)
            if obj["kind"] != "Job":
                # serve's readiness is /ready (traffic goes only to ready instances); a worker
                # gets no traffic, so its readiness is its own health, not its dependencies'.
                worker = obj["metadata"]["name"].endswith("worker")
                check_probes(where, c, "/health" if worker else "/ready")
        if pod.get("automountServiceAccountToken") is not False:
            fail(f"{label}: {name(obj)}", "automountServiceAccountToken is not false")
        # Every pod of ours is under a NetworkPolicy that restricts its ingress.
        policies = [np for np in of_kind("NetworkPolicy")
                    if selects(np["spec"]["podSelector"], labels)
                    and "Ingress" in np["spec"].get("policyTypes", [])]
        if not policies:
            fail(f"{label}: {name(obj)}", "no NetworkPolicy restricts its ingress")
        for np in policies:
            for rule in np["spec"].get("ingress", []):
                namespaces = {p.get("namespaceSelector", {}).get("matchLabels", {})
                              .get("kubernetes.io/metadata.name") for p in rule.get("from", [])}
                for port in rule.get("ports", []):
                    allowed = {"http": {"ingress-nginx"}, "metrics": {"monitoring"}}.get(port.get("port"))
                    if not rule.get("from") or allowed is None or namespaces - allowed:
                        fail(name(np), f"port {port.get('port')} is open to {namespaces or 'everyone'}")
        if obj["kind"] != "Deployment":
            continue

        # Every Deployment has a PodDisruptionBudget.
        if not any(selects(pdb["spec"]["selector"], labels) for pdb in of_kind("PodDisruptionBudget")):
            fail(f"{label}: {name(obj)}", "no PodDisruptionBudget selects its pods")

        # Shutdown: the preStop pause covers the drain; the grace period covers it all.
        container = pod["containers"][0]
        env = container_env(obj, container, by_kind_name)
        where = f"{label}: {name(obj)}"
        drain = seconds(env, "SHUTDOWN_DRAIN_SECS", where)
        grace = seconds(env, "SHUTDOWN_GRACE_SECS", where)
        pause = 0
        pre_stop = container.get("lifecycle", {}).get("preStop")
        if pre_stop:
            command = pre_stop.get("exec", {}).get("command", [])
            if pre_stop.get("sleep"):
                pause = int(pre_stop["sleep"]["seconds"])
            elif len(command) == 2 and command[0] in ("sleep", "/bin/sleep"):
                pause = int(command[1])
            else:
                fail(where, f"preStop is not a pause: {pre_stop}")
        if any(selects({"matchLabels": s}, labels) for s in routed_selectors):
            # The endpoint's removal reaches the ingress while the pod is still serving.
            if pause < drain:
                fail(where, f"preStop pause {pause}s is shorter than SHUTDOWN_DRAIN_SECS {drain}s")
        total = pause + drain + grace
        tgps = pod.get("terminationGracePeriodSeconds", 30)
        if tgps <= total:
            fail(where, f"terminationGracePeriodSeconds {tgps} is not above preStop {pause} + "
                        f"drain {drain} + grace {grace} = {total}")

    # Autoscaling: serve by an HPA, worker by a KEDA ScaledObject, both asymmetric.
    adapter = yaml.safe_load(ADAPTER_VALUES.read_text())
    adapter_metrics = {r["name"]["as"] for r in adapter["rules"]["custom"]}
    hpas = [h for h in of_kind("HorizontalPodAutoscaler")
            if h["spec"]["scaleTargetRef"]["name"] == "scaleout-serve"]
    if len(hpas) != 1:
        fail(label, "serve has no HorizontalPodAutoscaler")
    for hpa in hpas:
        where = f"{label}: {name(hpa)}"
        check_hpa_behavior(where, hpa["spec"].get("behavior", {}))
        kinds = {m["type"] for m in hpa["spec"]["metrics"]}
        if not any(m["type"] == "Resource" and m["resource"]["name"] == "cpu" for m in hpa["spec"]["metrics"]):
            fail(where, "does not scale on CPU")
        pods_metrics = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
        if not pods_metrics:
            fail(where, f"does not scale on requests per second per pod (metrics: {kinds})")
        for metric in pods_metrics - adapter_metrics:
            fail(where, f"metric {metric} is not made by any rule of {ADAPTER_VALUES.relative_to(ROOT)}")
        if hpa["spec"].get("minReplicas", 1) < 3:
            fail(where, "minReplicas is under 3")
    # An autoscaled Deployment must not state a count: each apply would reset it.
    for d in deployments:
        if "replicas" in d["spec"]:
            fail(f"{label}: {name(d)}", "sets spec.replicas, which its autoscaler owns")
    scaled = [s for s in of_kind("ScaledObject") if s["spec"]["scaleTargetRef"]["name"] == "scaleout-worker"]
    if len(scaled) != 1:
        fail(label, "worker has no KEDA ScaledObject")
    for so in scaled:
        where = f"{label}: {name(so)}"
        triggers = so["spec"]["triggers"]
        if not any(t["type"] == "postgresql" and "apalis.jobs" in t["metadata"].get("query", "")
                   for t in triggers):
            fail(where, "no postgresql trigger on apalis.jobs")
        check_hpa_behavior(where, so["spec"].get("advanced", {})
                           .get("horizontalPodAutoscalerConfig", {}).get("behavior", {}))
    # The migrate Job runs before the Deployments under Argo CD (a Sync hook, then wave 1).
    for job in (o for o in ours if o["kind"] == "Job"):
        ann = job["metadata"].get("annotations", {})
        if ann.get("argocd.argoproj.io/hook") not in ("PreSync", "Sync"):
            fail(f"{label}: {name(job)}", "is not an Argo CD hook")
    for d in deployments:
        wave = int(d["metadata"].get("annotations", {}).get("argocd.argoproj.io/sync-wave", "0"))
        if wave < 1:
            fail(f"{label}: {name(d)}", "sync-wave is not after the migrate Job's")
    # Nothing secret is committed: the pods read the Secret, no overlay defines it.
    if of_kind("Secret"):
        fail(label, "a Secret is committed in the manifests")


# Required settings an overlay may lack for now, and why: they fail its pods at start. None
# today (the aws overlay's S3 credentials come from the AWS default chain, no static keys).
PENDING_REQUIRED: dict[str, dict[str, str]] = {}


def required_vars() -> set[str]:
    """The variables .env.example marks `Required` (the config modules refuse to start without)."""
    required, comment = set(), []
    for line in (ROOT / ".env.example").read_text().splitlines():
        if line.startswith("#"):
            comment.append(line)
            continue
        m = re.match(r"([A-Z0-9_]+)=", line)
        if m and any("Required" in c for c in comment):
            required.add(m.group(1))
        comment = []
    return required


def secret_keys(label: str) -> set[str]:
    """The keys an overlay's Secret scaleout-secrets is documented to hold: secrets.example.env
    and the literals of make-secrets, whichever the overlay has."""
    keys, folder = set(), ROOT / "deploy/k8s/overlays" / label
    example = folder / "secrets.example.env"
    if example.exists():
        keys |= set(re.findall(r"^([A-Z0-9_]+)=", example.read_text(), re.M))
    script = folder / "make-secrets"
    if script.exists():
        keys |= set(re.findall(r"--from-literal=([A-Z0-9_]+)=", script.read_text()))
    return keys


def check_required(label: str, objects: list[dict]) -> None:
    by_kind_name = {(o["kind"], o["metadata"]["name"]): o for o in objects}
    required, secrets = required_vars(), secret_keys(label)
    if not secrets:
        fail(label, "no secrets.example.env or make-secrets says what scaleout-secrets holds")
    for obj in objects:
        if obj["kind"] not in ("Deployment", "Job") or obj["metadata"].get("labels", {}).get(OURS[0]) != OURS[1]:
            continue
        for c in obj["spec"]["template"]["spec"]["containers"]:
            env = set(container_env(obj, c, by_kind_name))
            if any(src.get("secretRef", {}).get("name") == "scaleout-secrets" for src in c.get("envFrom", [])):
                env |= secrets
            for var in sorted(required - env - set(PENDING_REQUIRED.get(label, {}))):
                fail(f"{label}: {name(obj)}", f"{var} is required and neither the ConfigMap nor the Secret sets it")


# --- the policy test's own test ------------------------------------------------------------------

def _find(objects, kind, name_):
    return next(o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name_)


def _serve(objects):
    return _find(objects, "Deployment", "scaleout-serve")["spec"]["template"]["spec"]


def _drop(kind, name_):
    def mutate(objects):
        objects.remove(_find(objects, kind, name_))
    return mutate


# One breakage for each rule, and the words its failure must contain: the policy test is
# only worth something if each of its checks can fail.
MUTATIONS = [
    ("no readiness probe", lambda o: _serve(o)["containers"][0].pop("readinessProbe"),
     "no readinessProbe"),
    ("liveness on /ready", lambda o: _serve(o)["containers"][0]["livenessProbe"]["httpGet"]
     .update(path="/ready"), "livenessProbe is not an HTTP GET of /health"),
    ("no memory limit", lambda o: _serve(o)["containers"][0]["resources"].pop("limits"),
     "resources.limits.memory"),
    ("writable root", lambda o: _serve(o)["containers"][0]["securityContext"]
     .update(readOnlyRootFilesystem=False), "readOnlyRootFilesystem"),
    ("a capability added", lambda o: _serve(o)["containers"][0]["securityContext"]["capabilities"]
     .update(add=["NET_ADMIN"]), "capabilities"),
    ("root user", lambda o: _serve(o)["securityContext"].update(runAsUser=0), "runAsUser"),
    ("no seccomp", lambda o: _serve(o)["securityContext"].pop("seccompProfile"), "seccompProfile"),
    ("no worker PDB", _drop("PodDisruptionBudget", "scaleout-worker"), "no PodDisruptionBudget"),
    ("no serve NetworkPolicy", _drop("NetworkPolicy", "scaleout-serve"), "no NetworkPolicy"),
    ("metrics open to all", lambda o: _find(o, "NetworkPolicy", "scaleout-serve")["spec"]["ingress"][1]
     .update({"from": []}), "open to"),
    ("short preStop", lambda o: _serve(o)["containers"][0]["lifecycle"]["preStop"]["exec"]
     .update(command=["sleep", "1"]), "shorter than SHUTDOWN_DRAIN_SECS"),
    ("short grace period", lambda o: _serve(o).update(terminationGracePeriodSeconds=30),
     "terminationGracePeriodSeconds"),
    ("slow scale-up", lambda o: _find(o, "HorizontalPodAutoscaler", "scaleout-serve")["spec"]["behavior"]
     ["scaleUp"].update(stabilizationWindowSeconds=60), "scaleUp.stabilizationWindowSeconds"),
    ("fast scale-down", lambda o: _find(o, "HorizontalPodAutoscaler", "scaleout-serve")["spec"]["behavior"]
     ["scaleDown"]["policies"][0].update(value=50), "more than 10 % a minute"),
    ("no HPA", _drop("HorizontalPodAutoscaler", "scaleout-serve"), "no HorizontalPodAutoscaler"),
    ("unknown custom metric", lambda o: _find(o, "HorizontalPodAutoscaler", "scaleout-serve")["spec"]
     ["metrics"][1]["pods"]["metric"].update(name="rps"), "not made by any rule"),
    ("worker KEDA trigger elsewhere", lambda o: _find(o, "ScaledObject", "scaleout-worker")["spec"]
     ["triggers"][0]["metadata"].update(query="select 1"), "apalis.jobs"),
    ("replicas set", lambda o: _find(o, "Deployment", "scaleout-serve")["spec"].update(replicas=3),
     "spec.replicas"),
    ("an object without a namespace", lambda o: _find(o, "Deployment", "scaleout-worker")["metadata"]
     .pop("namespace"), "not all in one namespace"),
    ("/ready public", lambda o: _find(o, "Ingress", "scaleout")["spec"]["rules"][0]["http"]["paths"][0]
     .update(path="/ready"), "must not be public"),
    ("migrate not a hook", lambda o: _find(o, "Job", "scaleout-migrate")["metadata"]["annotations"]
     .pop("argocd.argoproj.io/hook"), "not an Argo CD hook"),
    ("a committed Secret", lambda o: o.append({"apiVersion": "v1", "kind": "Secret",
                                              "metadata": {"name": "x"}}), "Secret is committed"),
    ("required setting missing", lambda o: _find(o, "Deployment", "scaleout-worker")["spec"]["template"]
     ["spec"]["containers"][0].update(envFrom=[e for e in _find(o, "Deployment", "scaleout-worker")
                                               ["spec"]["template"]["spec"]["containers"][0]["envFrom"]
                                               if "secretRef" not in e]), "DATABASE_URL is required"),
]


def schema_self_test(label: str, objects: list[dict]) -> None:
    """A misspelt field in a core object and in each custom resource must fail validation."""
    global problems
    broken = copy.deepcopy(objects)
    _serve(broken)["containers"][0]["livenessProbe"]["httpGett"] = {}
    _find(broken, "ServiceMonitor", "scaleout")["spec"]["endpoints"][0]["intervall"] = "15s"
    _find(broken, "PrometheusRule", "scaleout")["spec"]["groups"][0]["rulez"] = []
    _find(broken, "ScaledObject", "scaleout-worker")["spec"]["minReplicas"] = 1
    kept, problems = problems, []
    validate_schemas(label, broken, quiet=True)
    caught, problems = problems, kept
    for field in ("httpGett", "intervall", "rulez", "minReplicas"):
        if not any(field in p for p in caught):
            problems.append(f"{label}: strict validation missed the unknown field {field}")


def self_test(label: str, objects: list[dict]) -> None:
    """Each mutation of a passing overlay must make the policy test fail, with its message."""
    global problems
    kept, missed_before = problems, len(problems)
    for what, mutate, expected in MUTATIONS:
        broken = copy.deepcopy(objects)
        mutate(broken)
        problems = []
        check_policy(label, broken)
        check_required(label, broken)
        caught = [p for p in problems if expected in p]
        if not caught:
            kept.append(f"{label}: the policy test missed a breakage ({what}): expected a "
                        f"failure naming '{expected}', got {problems or 'none'}")
    problems = kept
    if len(problems) == missed_before:
        print(f"check-deploy: {label}: the policy test catches each of {len(MUTATIONS)} breakages")


def k8s(files: list[str]) -> None:
    for f in files:
        label = Path(f).stem
        objects = [o for o in yaml.safe_load_all(Path(f).read_text()) if o]
        validate_schemas(label, objects)
        before = len(problems)
        check_policy(label, objects)
        check_required(label, objects)
        if len(problems) == before and label == "local":
            schema_self_test(label, objects)
            self_test(label, objects)
        if len(problems) == before:
            print(f"check-deploy: {label}: policy holds (probes, resources, security context, "
                  "PDBs, NetworkPolicies, asymmetric autoscaling, preStop pause >= drain, "
                  "required settings)")
        for var, why in PENDING_REQUIRED.get(label, {}).items():
            print(f"check-deploy: {label}: note: {var} not set on purpose: {why}")


# --- compose against the local topology -------------------------------------------------------

# Services only one of the two runs, and why.
COMPOSE_ONLY = {
    "migrate": "the local stack runs `scaleout migrate` itself in `up`",
    "jaeger": "the local topology sends traces to SCALEOUT_STACK_OTLP_ENDPOINT when given",
    "grafana": "dashboards need a Grafana server; the local topology has none",
}
# Ports only one of the two publishes.
LOCAL_ONLY_PORTS = {
    "GARAGE_RPC_PORT": "Garage's cluster RPC: the local stack binds it on loopback, compose keeps it in the network",
    "GARAGE_ADMIN_PORT": "Garage's admin API: idem",
}
COMPOSE_ONLY_PORTS = {
    ("smtp", 8025): "Mailpit's web UI (the local sink is a Maildir)",
    ("jaeger", 16686): "Jaeger's UI",
    ("grafana", 3000): "Grafana",
}


def local_stack() -> tuple[list[str], dict[str, set[int]]]:
    text = (ROOT / "deploy/local/stack").read_text()
    services = re.search(r"^SERVICES=\(([^)]*)\)", text, re.M).group(1).split()
    ports: dict[str, set[int]] = {}
    for var, number in re.findall(r"\b([A-Z0-9_]+_PORT)=\$\(\((\d+) \+ OFFSET\)\)", text):
        if var in LOCAL_ONLY_PORTS:
            continue
        prefix = var.removesuffix("_PORT").removesuffix("_METRICS")
        service = {"NGINX": "nginx", "S3": "s3"}.get(prefix, prefix.lower())
        if service not in services:
            fail("deploy/local/stack", f"{var}: no service {service}")
            continue
        ports.setdefault(service, set()).add(int(number))
    return services, ports


def published(port) -> set[int]:
    """The host ports of one compose `ports` entry (short or long syntax, with ranges)."""
    if isinstance(port, dict):
        spec = str(port.get("published", ""))
    else:
        parts = str(port).split(":")
        spec = parts[-2] if len(parts) >= 2 else ""
    if not spec:
        return set()
    first, _, last = spec.partition("-")
    # A range gives scaled replicas a port each; the first is the one the local stack uses.
    return {int(first)}


SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY")
REQUIRED_FROM_ENV = re.compile(r"\$\{([A-Z0-9_]+):\?[^}]*\}")


def check_compose(doc: dict, compose_prometheus: dict, env_example: str) -> None:
    where = "docker-compose.yml"
    services, local_ports = local_stack()
    compose_services = doc["services"]
    for s in services:
        if s not in compose_services:
            fail(where, f"no service {s} (deploy/local/stack runs one)")
    for s in compose_services:
        if s not in services and s not in COMPOSE_ONLY:
            fail(where, f"service {s} is not in deploy/local/stack (nor listed as compose-only)")
    for s in services:
        if s not in compose_services:
            continue
        ports = set()
        for p in compose_services[s].get("ports", []):
            ports |= published(p)
        extra = {p for p in ports if (s, p) not in COMPOSE_ONLY_PORTS}
        if extra != local_ports.get(s, set()):
            fail(where, f"service {s} publishes {sorted(extra)}, "
                        f"deploy/local/stack {sorted(local_ports.get(s, set()))}")
    for name_, svc in compose_services.items():
        for p in svc.get("ports", []):
            if isinstance(p, str) and not p.startswith("127.0.0.1:"):
                fail(where, f"{name_} publishes {p} beyond loopback")
        # Every service can say whether it is healthy (migrate runs once and exits).
        if "healthcheck" not in svc and name_ != "migrate":
            fail(where, f"{name_} has no healthcheck")
        depends = svc.get("depends_on") or {}
        if isinstance(depends, list):
            fail(where, f"{name_}: depends_on without conditions")
            depends = {}
        for dep, cond in depends.items():
            if cond.get("condition") not in ("service_healthy", "service_completed_successfully"):
                fail(where, f"{name_} waits for {dep} to start, not to be healthy")
        # Secrets only from .env: a password, key or token is a ${NAME:?} reference.
        env = svc.get("environment") or {}
        for key, value in (env.items() if isinstance(env, dict) else []):
            value = str(value)
            secret = SECRET_NAME.search(key) or re.search(r"://[^/@\s]+:[^/@\s]+@", value)
            if secret and not REQUIRED_FROM_ENV.search(value):
                fail(where, f"{name_}: {key} is written in the file, not taken from .env as ${{NAME:?}}")
    # Every variable the file requires is in the committed example.
    listed = set(re.findall(r"^([A-Z0-9_]+)=", env_example, re.M))
    text = yaml.safe_dump(doc)
    for var in sorted(set(REQUIRED_FROM_ENV.findall(text)) - listed):
        fail(where, f"${{{var}:?}} is not in .env.compose.example")
    # --scale worker=N: nothing may pin one worker's identity, and Prometheus finds them all.
    worker = compose_services.get("worker", {})
    if "container_name" in worker or "SCALEOUT_INSTANCE_ID" in (worker.get("environment") or {}):
        fail(where, "worker has a fixed container name or instance id: replicas would share it")
    for p in worker.get("ports", []):
        spec = str(p).split(":")[-2] if isinstance(p, str) and p.count(":") >= 1 else ""
        if spec and "-" not in spec:
            fail(where, f"worker publishes the single host port {spec}: a second replica cannot bind it")
    jobs = {job["job_name"]: job for job in compose_prometheus.get("scrape_configs", [])}
    worker_job = jobs.get("scaleout-worker", {})
    if not any("worker" in sd.get("names", []) for sd in worker_job.get("dns_sd_configs", [])):
        fail("deploy/compose/prometheus.yml", "the workers are not found by DNS (dns_sd_configs of 'worker')")


def _compose_inputs():
    return (yaml.safe_load((ROOT / "docker-compose.yml").read_text()),
            yaml.safe_load((ROOT / "deploy/compose/prometheus.yml").read_text()),
            (ROOT / ".env.compose.example").read_text())


def _svc(name_):
    return lambda d, p, e: d["services"][name_]


COMPOSE_MUTATIONS = [
    ("a port moved", lambda d, p, e: d["services"]["app2"].update(ports=["127.0.0.1:8092:8080", "127.0.0.1:9182:9180"]),
     "app2 publishes"),
    ("a service missing", lambda d, p, e: d["services"].pop("redis"), "no service redis"),
    ("an extra service", lambda d, p, e: d["services"].update(extra={"image": "x", "healthcheck": {}}),
     "extra is not in deploy/local/stack"),
    ("a port beyond loopback", lambda d, p, e: d["services"]["prometheus"].update(ports=["9090:9090"]),
     "beyond loopback"),
    ("no healthcheck", lambda d, p, e: d["services"]["redis"].pop("healthcheck"), "redis has no healthcheck"),
    ("waits for start only", lambda d, p, e: d["services"]["nginx"]["depends_on"]["app1"]
     .update(condition="service_started"), "nginx waits for app1 to start"),
    ("a literal password", lambda d, p, e: d["services"]["primary"]["environment"]
     .update(POSTGRES_PASSWORD="scaleout"), "POSTGRES_PASSWORD is written in the file"),
    ("a literal URL password", lambda d, p, e: d["services"]["worker"]["environment"]
     .update(DATABASE_URL="postgres://scaleout:pw@primary:5432/scaleout"), "DATABASE_URL is written"),
    ("a worker id", lambda d, p, e: d["services"]["worker"]["environment"]
     .update(SCALEOUT_INSTANCE_ID="worker1"), "fixed container name or instance id"),
    ("a single worker port", lambda d, p, e: d["services"]["worker"].update(ports=["127.0.0.1:9184:9180"]),
     "single host port"),
    ("workers as static targets", lambda d, p, e: p["scrape_configs"][1].pop("dns_sd_configs"),
     "not found by DNS"),
]


def compose() -> None:
    doc, prom, env_example = _compose_inputs()
    check_compose(doc, prom, env_example)
    # The check's own test: each breakage must make it fail with its message.
    global problems
    kept, before = problems, len(problems)
    for what, mutate, expected in COMPOSE_MUTATIONS:
        d, p, e = copy.deepcopy(doc), copy.deepcopy(prom), env_example
        mutate(d, p, e)
        problems = []
        check_compose(d, p, e)
        if not any(expected in x for x in problems):
            kept.append(f"compose: the check missed a breakage ({what}): expected a failure "
                        f"naming '{expected}', got {problems or 'none'}")
    problems = kept
    # A variable the file requires but the example lacks.
    problems_before = len(problems)
    check_compose(doc, prom, env_example.replace("POSTGRES_PASSWORD=", "#"))
    missed = not any("POSTGRES_PASSWORD:?} is not in .env.compose.example" in x
                     for x in problems[problems_before:])
    del problems[problems_before:]
    if missed:
        problems.append("compose: the check missed a variable absent from .env.compose.example")
    if len(problems) == before:
        services, _ = local_stack()
        print(f"check-deploy: docker-compose.yml and deploy/local/stack define the same "
              f"{len(services)} services and ports (compose adds {', '.join(COMPOSE_ONLY)}); "
              "every service has a healthcheck and waits for health; secrets only from .env; "
              "workers scalable and found by DNS; the check catches each of "
              f"{len(COMPOSE_MUTATIONS) + 1} breakages")


def main() -> int:
    if sys.argv[1:2] == ["k8s"] and sys.argv[2:]:
        k8s(sys.argv[2:])
    elif sys.argv[1:] == ["compose"]:
        compose()
    else:
        print(__doc__, file=sys.stderr)
        return 2
    for p in problems:
        print(f"check-deploy: FAIL {p}", file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
