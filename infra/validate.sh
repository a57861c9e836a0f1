#!/usr/bin/env bash
# Validates the deployment files without Docker, a cluster or cloud credentials:
#   * docker-compose.yml against the Compose specification's JSON schema (check-jsonschema);
#   * every kustomize overlay renders (kubectl kustomize) and its manifests validate against
#     the Kubernetes API schemas, strictly (kubernetes-validate); KEDA's custom resources have
#     no schema there and are reported as skipped;
#   * Terraform: `terraform fmt -check`, and `terraform validate` when the google provider
#     can be installed (it cannot be downloaded on machines without registry access: then
#     that step is reported as skipped, not passed).
# The validators are installed into .local/venv-validate from PyPI on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
source infra/local/common.sh
log() { echo "infra/validate: $*" >&2; }
die() { echo "infra/validate: error: $*" >&2; exit 1; }

VENV="$STATE_DIR/venv-validate"
if [[ ! -x $VENV/bin/check-jsonschema || ! -x $VENV/bin/kubernetes-validate ]]; then
  log "installing check-jsonschema and kubernetes-validate into $VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check check-jsonschema kubernetes-validate >&2
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
