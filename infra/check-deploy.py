#!/usr/bin/env python3
"""Reads the deployment files as the kubelet, kubectl, KEDA, Alertmanager and Google Cloud
would meet them, and fails on each class of mistake that schemas and renders let through:

  namespace     every namespaced object of every overlay lies in the overlay's namespace
                (components render in the overlay: one without `namespace:` puts their
                objects in `default`)
  non-root      a pod with runAsNonRoot runs a numeric, non-zero user, and the image's final
                USER is numeric (the kubelet cannot check that a user *name* is not root)
  grace         terminationGracePeriodSeconds (and compose's stop_grace_period) covers
                worker.shutdown_deadline + both exporters' flush timeout + a margin
  project       the project id is set once per overlay; no PROJECT_ID placeholder survives
  telemetry     every OTLP endpoint is a Service the overlay ships; a scraped pod does not
                also export its metrics over OTLP (every sum() would double)
  autoscaling   no deprecated KEDA scaler; every Prometheus trigger authenticates and names
                the overlay's namespace; every ScaledObject and monitor targets pods that exist
  alerts        every alert rule has a runbook_url naming a section of docs/operations.md
                that exists
  terraform     every API a resource needs is enabled by the module, before the resource;
                the data tables are protected and backed up

Run by infra/validate.sh (part of the test command). `--self-test` shows that each check
fails on a file with the mistake it looks for.
"""
import os
import re
import subprocess
import sys
import tomllib

import yaml

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
CLUSTER_SCOPED = {
    "Namespace", "ClusterRole", "ClusterRoleBinding", "CustomResourceDefinition",
    "PriorityClass", "StorageClass", "GlobalRules", "ClusterRules", "ClusterPodMonitoring",
    "ClusterTriggerAuthentication",
}
WORKLOADS = {"Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob"}
# Seconds between the exporters' flush and the kubelet's SIGKILL: process exit, a slow
# last Bigtable call cut short.
GRACE_MARGIN_S = 5
OUR_IMAGE = re.compile(r"(^|/)tiersweep(:|$)")


def read(path):
    with open(os.path.join(ROOT, path)) as f:
        return f.read()


def duration_s(text):
    """Seconds in a tiersweep duration ("20s", "500ms", "10m", "1h")."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)\s*", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
    return float(m.group(1)) * scale


def flush_timeout_s():
    """EXPORT_FLUSH_TIMEOUT in src/telemetry/setup.rs, which Telemetry::shutdown waits for
    each of its two exporters."""
    src = read("src/telemetry/setup.rs")
    m = re.search(r"EXPORT_FLUSH_TIMEOUT: [\w:]*Duration =\s*[\w:]*Duration::from_secs\((\d+)\)", src)
    if not m:
        raise SystemExit("check-deploy: EXPORT_FLUSH_TIMEOUT not found in src/telemetry/setup.rs")
    return int(m.group(1))


def default_shutdown_deadline_s():
    src = read("src/config/file.rs")
    m = re.search(r"shutdown_deadline: Duration::from_secs\((\d+)\)", src)
    if not m:
        raise SystemExit("check-deploy: the default worker.shutdown_deadline not found")
    return int(m.group(1))


def render(overlay):
    out = subprocess.run(["kubectl", "kustomize", overlay], cwd=ROOT, capture_output=True,
                         text=True)
    if out.returncode != 0:
        raise SystemExit(f"check-deploy: {overlay} does not render: {out.stderr.strip()}")
    return [d for d in yaml.safe_load_all(out.stdout) if d]


def name_of(obj):
    return f"{obj['kind']}/{obj['metadata']['name']}"


def pod_spec(obj):
    spec = obj.get("spec", {})
    if obj["kind"] == "CronJob":
        return spec["jobTemplate"]["spec"]["template"]["spec"], spec["jobTemplate"]["spec"]["template"]
    return spec["template"]["spec"], spec["template"]


def env_of(container):
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def labels_match(selector, labels):
    for k, v in (selector.get("matchLabels") or {}).items():
        if labels.get(k) != v:
            return False
    for expr in selector.get("matchExpressions") or []:
        have = labels.get(expr["key"])
        op = expr["operator"]
        if op == "In" and have not in expr["values"]:
            return False
        if op == "NotIn" and have in expr["values"]:
            return False
        if op == "Exists" and have is None:
            return False
        if op == "DoesNotExist" and have is not None:
            return False
    return True


class Problems:
    def __init__(self):
        self.items = []

    def add(self, check, where, what):
        self.items.append(f"[{check}] {where}: {what}")


# --- the checks on one rendered overlay -------------------------------------------------

def check_namespace(p, where, objs):
    spaces = [o["metadata"]["name"] for o in objs if o["kind"] == "Namespace"]
    if len(spaces) != 1:
        p.add("namespace", where, f"renders {len(spaces)} Namespace objects, expected one")
        return None
    ns = spaces[0]
    for o in objs:
        if o["kind"] in CLUSTER_SCOPED:
            continue
        got = o["metadata"].get("namespace")
        if got != ns:
            p.add("namespace", where,
                  f"{name_of(o)} lies in {got or 'default (none set)'}, not {ns}")
    return ns


def dockerfile_user():
    users = re.findall(r"^USER\s+(\S+)", read("Dockerfile"), re.M)
    return users[-1] if users else None


def check_non_root(p, where, objs, image_user):
    image_numeric = bool(image_user) and re.fullmatch(r"\d+(:\d+)?", image_user) is not None
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        spec, _ = pod_spec(o)
        pod_sc = spec.get("securityContext") or {}
        for c in spec.get("containers", []) + spec.get("initContainers", []):
            sc = {**pod_sc, **(c.get("securityContext") or {})}
            if not sc.get("runAsNonRoot"):
                continue
            user = sc.get("runAsUser")
            if user is not None:
                if not isinstance(user, int) or user == 0:
                    p.add("non-root", where, f"{name_of(o)}/{c['name']}: runAsUser {user!r} "
                          "is not a non-zero number")
                continue
            ours = OUR_IMAGE.search(c.get("image", "")) is not None
            if not (ours and image_numeric):
                p.add("non-root", where, f"{name_of(o)}/{c['name']}: runAsNonRoot without a "
                      "numeric runAsUser, and the image's USER is not known to be numeric: "
                      "the kubelet refuses to start it (CreateContainerConfigError)")


def check_grace(p, where, objs, budget_for):
    for o in objs:
        if o["kind"] not in WORKLOADS:
            continue
        spec, _ = pod_spec(o)
        for c in spec.get("containers", []):
            if not OUR_IMAGE.search(c.get("image", "")):
                continue
            needed = budget_for(env_of(c))
            grace = spec.get("terminationGracePeriodSeconds", 30)
            if grace < needed:
                p.add("grace", where, f"{name_of(o)}: terminationGracePeriodSeconds {grace} < "
                      f"{needed:g} (shutdown deadline + 2 exporter flushes + {GRACE_MARGIN_S} s)")


def budget(config_toml, flush_s):
    worker = tomllib.loads(config_toml).get("worker", {}) if config_toml else {}
    base = duration_s(worker["shutdown_deadline"]) if "shutdown_deadline" in worker \
        else default_shutdown_deadline_s()

    def for_env(env):
        deadline = env.get("TIERSWEEP_WORKER__SHUTDOWN_DEADLINE")
        d = duration_s(deadline) if deadline else base
        return d + 2 * flush_s + GRACE_MARGIN_S
    return for_env


def check_project(p, where, objs, overlay_dir):
    text = yaml.safe_dump_all(objs)
    if "PROJECT_ID" in text:
        lines = [l.strip() for l in text.splitlines() if "PROJECT_ID" in l]
        p.add("project", where, f"the PROJECT_ID placeholder survives: {lines[:3]}")
    project = None
    for o in objs:
        if o["kind"] == "ConfigMap" and o["metadata"]["name"].startswith("tiersweep-project"):
            project = o.get("data", {}).get("GOOGLE_CLOUD_PROJECT")
    if not project:
        p.add("project", where, "no tiersweep-project ConfigMap with GOOGLE_CLOUD_PROJECT")
        return
    count = 0
    word = re.compile(r"(?<![\w-])" + re.escape(project) + r"(?![\w])")
    for dirpath, _, files in os.walk(os.path.join(ROOT, overlay_dir)):
        for f in files:
            with open(os.path.join(dirpath, f)) as fh:
                # A namespace of the same name is another setting.
                count += sum(len(word.findall(line)) for line in fh
                             if not line.lstrip().startswith("namespace:"))
    if count > 1:
        p.add("project", where, f"the project id {project!r} is written {count} times in "
              f"{overlay_dir}: set it once (tiersweep-project) and replace it from there")


def services(objs, ns):
    return {o["metadata"]["name"] for o in objs if o["kind"] == "Service"
            and o["metadata"].get("namespace") == ns}


def pods(objs):
    """(workload, pod labels, containers, namespace) for each pod template."""
    for o in objs:
        if o["kind"] in WORKLOADS:
            spec, template = pod_spec(o)
            labels = (template.get("metadata") or {}).get("labels") or {}
            yield o, labels, spec.get("containers", []), o["metadata"].get("namespace")


def check_telemetry(p, where, objs, ns):
    svcs = services(objs, ns)
    monitors = [o for o in objs if o["kind"] in ("PodMonitoring", "ServiceMonitor")]
    for o, labels, containers, pod_ns in pods(objs):
        scraped = any(labels_match(m["spec"].get("selector", {}), labels) for m in monitors)
        for c in containers:
            env = env_of(c)
            endpoint = env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or ""
            if endpoint.strip():
                host = re.sub(r"^\w+://", "", endpoint).split(":")[0].split("/")[0]
                parts = host.split(".")
                svc, svc_ns = parts[0], (parts[1] if len(parts) > 1 else pod_ns)
                if svc_ns != ns or svc not in svcs:
                    p.add("telemetry", where, f"{name_of(o)}: exports OTLP to {endpoint}, a "
                          "Service this overlay does not ship")
                if scraped and env.get("OTEL_METRICS_EXPORTER") != "none":
                    p.add("telemetry", where, f"{name_of(o)}: scraped by a monitor and exporting "
                          "metrics over OTLP too: every series counts twice "
                          "(set OTEL_METRICS_EXPORTER=none)")


def check_autoscaling(p, where, objs, ns):
    auths = {o["metadata"]["name"] for o in objs if o["kind"] == "TriggerAuthentication"}
    deployments = {o["metadata"]["name"] for o in objs if o["kind"] == "Deployment"}
    for o in objs:
        if o["kind"] != "ScaledObject":
            continue
        target = o["spec"]["scaleTargetRef"]["name"]
        if target not in deployments:
            p.add("autoscaling", where, f"{name_of(o)} scales {target}, which is not rendered")
        for t in o["spec"].get("triggers", []):
            kind, meta = t["type"], t.get("metadata", {})
            if kind in ("gcp-pubsub",):
                p.add("autoscaling", where, f"{name_of(o)}: the {kind} scaler is deprecated "
                      "(KEDA 2.18): use a prometheus trigger on Cloud Monitoring")
            if kind != "prometheus":
                continue
            server = meta.get("serverAddress", "")
            if server.startswith("https://monitoring.googleapis.com/"):
                ref = (t.get("authenticationRef") or {}).get("name")
                if ref not in auths:
                    p.add("autoscaling", where, f"{name_of(o)}: a Cloud Monitoring query "
                          "without a TriggerAuthentication (podIdentity gcp)")
            else:
                host = re.sub(r"^\w+://", "", server).split(":")[0].split("/")[0]
                parts = host.split(".")
                if parts[0] not in services(objs, parts[1] if len(parts) > 1 else ns):
                    p.add("autoscaling", where, f"{name_of(o)}: queries {server}, which this "
                          "overlay does not ship")
            query = meta.get("query", "")
            if "tiersweep_" in query:
                m = re.search(r'namespace="([^"]*)"', query)
                if not m or m.group(1) != ns:
                    p.add("autoscaling", where, f"{name_of(o)}: {query!r} must select "
                          f'namespace="{ns}" (one project may hold several deployments)')
    for m in (o for o in objs if o["kind"] in ("PodMonitoring", "ServiceMonitor")):
        sel = m["spec"].get("selector", {})
        if not any(labels_match(sel, labels) and pod_ns == m["metadata"].get("namespace")
                   for _, labels, _, pod_ns in pods(objs)):
            p.add("autoscaling", where, f"{name_of(m)} selects no pod in its namespace")


# --- checks on files ----------------------------------------------------------------------

def github_anchor(heading):
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def check_alerts(p, rules_text, operations_md):
    anchors = {github_anchor(h) for h in re.findall(r"^#+\s+(.*)$", operations_md, re.M)}
    rules = yaml.safe_load(rules_text)
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            url = (rule.get("annotations") or {}).get("runbook_url")
            if not url:
                p.add("alerts", rule["alert"], "no runbook_url")
                continue
            m = re.search(r"docs/operations\.md#([\w-]+)$", url)
            if not m or m.group(1) not in anchors:
                p.add("alerts", rule["alert"],
                      f"runbook_url {url} names no section of docs/operations.md")


# The API each resource type's calls go to.
API_OF = [
    (r"google_bigtable_", "bigtableadmin.googleapis.com"),
    (r"google_pubsub_", "pubsub.googleapis.com"),
    (r"google_storage_", "storage.googleapis.com"),
    (r"google_service_account", "iam.googleapis.com"),
    (r"google_project_iam_custom_role", "iam.googleapis.com"),
    (r"google_project_iam_", "cloudresourcemanager.googleapis.com"),
    (r"google_monitoring_", "monitoring.googleapis.com"),
]


def terraform_blocks(hcl):
    """(type, name, body) of each resource block, cut at the next top-level closing brace."""
    for m in re.finditer(r'^resource "(\w+)" "(\w+)" \{\n(.*?)^\}', hcl, re.M | re.S):
        yield m.group(1), m.group(2), m.group(3)


def local_refs_resources(hcl, name):
    """Whether `local.<name>` is defined from a resource (Terraform then orders through it)."""
    m = re.search(r"^  " + name + r"\s*=(.*?)(?=^  \w+\s*=|^\})", hcl, re.M | re.S)
    return bool(m and re.search(r"\bgoogle_\w+\.\w+", m.group(1)))


def check_terraform(p, hcl):
    m = re.search(r"apis\s*=\s*\[(.*?)\]", hcl, re.S)
    enabled = set(re.findall(r'"([\w.]+\.googleapis\.com)"', m.group(1))) if m else set()
    if not re.search(r'resource "google_project_service" "apis"', hcl):
        p.add("terraform", "infra/terraform", "no google_project_service enables the APIs")
    for kind, name, body in terraform_blocks(hcl):
        if kind == "google_project_service":
            continue
        for prefix, api in API_OF:
            if kind.startswith(prefix):
                if api not in enabled:
                    p.add("terraform", f"{kind}.{name}", f"needs {api}, which the module does "
                          "not enable")
                break
        refs = set(re.findall(r"\b(google_\w+)\.\w+", body)) - {"google_project_service"}
        refs |= {n for n in re.findall(r"\blocal\.(\w+)", body) if local_refs_resources(hcl, n)}
        if "google_project_service.apis" not in body and not refs:
            p.add("terraform", f"{kind}.{name}", "may be created before its API is enabled "
                  "(depends_on = [google_project_service.apis])")
        if kind == "google_bigtable_table":
            if not re.search(r"deletion_protection\s*=", body):
                p.add("terraform", f"{kind}.{name}", "no deletion_protection: a renamed table "
                      "would be destroyed with its data")
            if "automated_backup_policy" not in body:
                p.add("terraform", f"{kind}.{name}", "no automated_backup_policy")


def check_compose(p, compose_text, config_budget):
    compose = yaml.safe_load(compose_text)
    anchor = compose.get("x-tiersweep", {})
    grace = anchor.get("stop_grace_period")
    needed = config_budget(anchor.get("environment") or {})
    if grace is None or duration_s(grace) < needed:
        p.add("grace", "docker-compose.yml", f"stop_grace_period {grace} < {needed:g}s")


# --- driver -------------------------------------------------------------------------------

def check_overlay(p, overlay):
    where = overlay
    objs = render(overlay)
    flush = flush_timeout_s()
    config = next((o["data"]["tiersweep.toml"] for o in objs if o["kind"] == "ConfigMap"
                   and o["metadata"]["name"].startswith("tiersweep-config")), None)
    ns = check_namespace(p, where, objs)
    check_non_root(p, where, objs, dockerfile_user())
    check_grace(p, where, objs, budget(config, flush))
    check_project(p, where, objs, overlay)
    if ns:
        check_telemetry(p, where, objs, ns)
        check_autoscaling(p, where, objs, ns)
    return objs


def check_all():
    p = Problems()
    overlays = sorted(os.path.join("infra/k8s/overlays", d)
                      for d in os.listdir(os.path.join(ROOT, "infra/k8s/overlays")))
    for overlay in overlays:
        check_overlay(p, overlay)
    user = dockerfile_user()
    if not user or not re.fullmatch(r"\d+(:\d+)?", user) or user.split(":")[0] == "0":
        p.add("non-root", "Dockerfile", f"the final USER is {user!r}: use a non-zero uid")
    check_alerts(p, read("infra/monitoring/tiersweep.rules.yaml"), read("docs/operations.md"))
    hcl = "".join(read(os.path.join("infra/terraform", f)) for f in
                  sorted(os.listdir(os.path.join(ROOT, "infra/terraform"))) if f.endswith(".tf"))
    check_terraform(p, hcl)
    check_compose(p, read("docker-compose.yml"),
                  budget(read("infra/k8s/base/tiersweep.toml"), flush_timeout_s()))
    return p, overlays


def self_test():
    """Each check, fed the mistake it exists for, reports it."""
    failures = []

    def expect(check, run):
        p = Problems()
        run(p)
        if not any(i.startswith(f"[{check}]") for i in p.items):
            failures.append(check)

    base = [{"kind": "Namespace", "metadata": {"name": "ns"}}]
    deploy = {"kind": "Deployment", "metadata": {"name": "d"},
              "spec": {"template": {"metadata": {"labels": {"app": "x"}}, "spec": {
                  "securityContext": {"runAsNonRoot": True},
                  "containers": [{"name": "c", "image": "tiersweep", "env": [
                      {"name": "OTEL_EXPORTER_OTLP_ENDPOINT",
                       "value": "http://otel-collector.observability:4317"}]}]}}}}
    expect("namespace", lambda p: check_namespace(p, "t", base + [deploy]))
    expect("non-root", lambda p: check_non_root(p, "t", [deploy], "nonroot:nonroot"))
    expect("grace", lambda p: check_grace(p, "t", [deploy], lambda env: 35))
    expect("telemetry", lambda p: check_telemetry(p, "t", [deploy], "ns"))
    scaled = {"kind": "ScaledObject", "metadata": {"name": "s"}, "spec": {
        "scaleTargetRef": {"name": "d"}, "triggers": [{"type": "gcp-pubsub", "metadata": {}}]}}
    expect("autoscaling", lambda p: check_autoscaling(p, "t", [deploy, scaled], "ns"))
    expect("alerts", lambda p: check_alerts(
        p, "groups: [{name: g, rules: [{alert: A, expr: up, annotations: {summary: s}}]}]", "# x"))
    expect("terraform", lambda p: check_terraform(
        p, 'resource "google_bigtable_table" "hv" {\n  name = "objects"\n}\n'))
    if failures:
        raise SystemExit(f"check-deploy: self-test: these checks miss their mistake: {failures}")
    print("check-deploy: self-test: every check reports the mistake it looks for", file=sys.stderr)


def main():
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        return
    p, overlays = check_all()
    if p.items:
        print("check-deploy: the deployment files would fail where they are deployed:",
              file=sys.stderr)
        for item in p.items:
            print(f"  {item}", file=sys.stderr)
        sys.exit(1)
    print(f"check-deploy: {', '.join(overlays)}, Dockerfile, alert rules, Terraform and compose "
          "pass every deployment check", file=sys.stderr)


if __name__ == "__main__":
    main()
