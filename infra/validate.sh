#!/usr/bin/env bash
# Validates the deployment files without Docker, a cluster or cloud credentials:
#   * docker-compose.yml against the Compose specification's JSON schema (check-jsonschema);
#   * every kustomize overlay renders (kubectl kustomize) and its manifests validate against
#     the Kubernetes API schemas, strictly (kubernetes-validate); KEDA's custom resources have
#     no schema there and are reported as skipped;
#   * the alert rules (infra/monitoring) with promtool: `check rules`, and `test rules` with
#     their unit tests; the PrometheusRule / GMP Rules and the Grafana dashboard generated
#     from them are up to date; each monitoring component renders over the base;
#   * the Alertmanager configuration (amtool check-config);
#   * infra/check-deploy.py: namespaces, numeric users, grace periods, one project id,
#     telemetry and autoscaling targets, runbooks, APIs and protected tables;
#   * Terraform: `terraform fmt -check`, and `terraform validate` when the google provider
#     can be installed (it cannot be downloaded on machines without registry access: then
#     that step is reported as skipped, not passed).
# The validators are installed into .local/venv-validate from PyPI on first use; promtool
# and amtool into .local/ from the distribution's prometheus and prometheus-alertmanager
# packages (apt-get download, no root).
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/local/common.sh
log() { echo "infra/validate: $*" >&2; }
die() { echo "infra/validate: error: $*" >&2; exit 1; }

VENV="$STATE_DIR/venv-validate"
if [[ ! -x $VENV/bin/check-jsonschema || ! -x $VENV/bin/kubernetes-validate ]] \
  || ! "$VENV/bin/python" -c "import yaml" 2>/dev/null; then
  log "installing check-jsonschema, kubernetes-validate and PyYAML into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check check-jsonschema kubernetes-validate pyyaml >&2
fi

log "docker-compose.yml: Compose specification schema"
"$VENV/bin/check-jsonschema" --builtin-schema vendor.compose-spec docker-compose.yml >&2

command -v kubectl >/dev/null || die "kubectl is needed to render infra/k8s (kubectl kustomize)"
K8S_VERSION="${TIERSWEEP_K8S_VERSION:-1.30.0}"
rendered="$(mktemp -d)"
trap 'rm -rf "$rendered"' EXIT
for overlay in infra/k8s/overlays/*/; do
  name="$(basename "$overlay")"
  kubectl kustomize "$overlay" >"$rendered/$name.yaml" || die "infra/k8s/overlays/$name does not render"
  out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$rendered/$name.yaml" 2>&1)" \
    || { echo "$out" >&2; die "infra/k8s/overlays/$name: manifests do not validate against Kubernetes $K8S_VERSION"; }
  skipped="$(grep -o "kind [A-Za-z]* with api version [^ ]*" <<<"$out" | sort -u | paste -sd, - || true)"
  log "infra/k8s/overlays/$name: renders, valid for Kubernetes $K8S_VERSION${skipped:+ (no schema, not validated: $skipped)}"
done

# Installs Debian package $2's binary $1 under $STATE_DIR/$1 (apt-get download, no root)
# unless it is on PATH; prints its path.
tool() {
  local bin=$1 package=$2 path="$STATE_DIR/$1/usr/bin/$1"
  if [[ -x $path ]]; then echo "$path"; return; fi
  if command -v "$bin" >/dev/null; then command -v "$bin"; return; fi
  command -v apt-get >/dev/null || die "$bin is needed: install Debian's $package"
  log "installing $bin into $STATE_DIR/$bin (apt-get download $package)"
  local dl
  dl="$(mktemp -d)"
  (cd "$dl" && apt-get download -q "$package" >/dev/null 2>&1) || die "apt-get download $package failed: install $bin"
  mkdir -p "$STATE_DIR/$bin"
  dpkg-deb -x "$dl"/"${package}"_*.deb "$STATE_DIR/$bin"
  rm -rf "$dl"
  echo "$path"
}
PROMTOOL="$(tool promtool prometheus)"
AMTOOL="$(tool amtool prometheus-alertmanager)"
"$PROMTOOL" check rules infra/monitoring/tiersweep.rules.yaml >&2 || die "infra/monitoring/tiersweep.rules.yaml: promtool check rules failed"
(cd infra/monitoring && "$PROMTOOL" test rules tiersweep.rules.test.yaml) >&2 || die "infra/monitoring: the alert rules' unit tests failed"
log "infra/monitoring: alert rules pass promtool check and their unit tests"
python3 infra/monitoring/render.py --check || die "infra/monitoring: generated rule resources are stale"
"$AMTOOL" check-config infra/k8s/gmp-alertmanager/alertmanager.yaml >&2 \
  || die "infra/k8s/gmp-alertmanager/alertmanager.yaml: amtool check-config failed"
log "infra/k8s/gmp-alertmanager: the Alertmanager route is valid"
python3 infra/monitoring/dashboard.py --check || die "infra/monitoring: the dashboard is stale"
for component in infra/k8s/components/*/; do
  name="$(basename "$component")"
  dir="$rendered/component-$name"
  mkdir -p "$dir"
  # Kustomize takes no absolute roots: point at the repository relatively.
  repo="$(realpath --relative-to="$dir" "$PWD")"
  cat >"$dir/kustomization.yaml" <<KUST
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [$repo/infra/k8s/base]
components: [$repo/${component%/}]
KUST
  kubectl kustomize --load-restrictor LoadRestrictionsNone "$dir" >"$dir/out.yaml" \
    || die "infra/k8s/components/$name does not render over the base"
  out="$("$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$dir/out.yaml" 2>&1)" \
    || { echo "$out" >&2; die "infra/k8s/components/$name: manifests do not validate against Kubernetes $K8S_VERSION"; }
  log "infra/k8s/components/$name: renders over the base"
done

# What schemas and renders let through, read as the kubelet, KEDA and Google Cloud would.
"$VENV/bin/python" infra/check-deploy.py --self-test
"$VENV/bin/python" infra/check-deploy.py || die "infra: the deployment checks failed (above)"

command -v terraform >/dev/null || die "terraform is needed for terraform fmt -check"
# No user CLI configuration here; an empty one keeps terraform from warning about it.
export TF_CLI_CONFIG_FILE="$rendered/terraformrc"
: >"$TF_CLI_CONFIG_FILE"
terraform fmt -check -recursive -diff infra/terraform >&2 || die "infra/terraform is not formatted: run terraform fmt -recursive infra/terraform"
log "infra/terraform: terraform fmt -check passed"
tfdir="$(mktemp -d)"
cp infra/terraform/*.tf "$tfdir/"
if (cd "$tfdir" && timeout 120 terraform init -backend=false -input=false >"$tfdir/init.log" 2>&1); then
  (cd "$tfdir" && terraform validate -no-color) >&2 || die "infra/terraform: terraform validate failed"
  log "infra/terraform: terraform validate passed"
else
  log "infra/terraform: SKIPPED terraform validate: the hashicorp/google provider could not be installed here (no registry access); fmt -check and tests/deploy_config.rs ran"
fi
rm -rf "$tfdir"
