#!/usr/bin/env bash
# Signs one client certificate per node with Stockade's CA and stores them all in the Secret
# stockade-agent-tls (<node>.crt, <node>.key, ca.crt), from which each agent takes its own.
# Run after `kubectl apply -k deploy/` (once cert-manager has made the CA) and whenever nodes
# join; agents on nodes without a certificate wait for it. Needs kubectl and the `stockade`
# command (pip install .). Existing nodes get fresh certificates; agents pick them up on restart.
# Every node of the cluster is covered each time, so the Secret never loses one.
#
# Environment: NAMESPACE (stockade-system), CA_SECRET (stockade-ca, cert-manager's CA; with your
# own CA, put its tls.crt/tls.key in a Secret and name it here), SECRET (stockade-agent-tls).
set -euo pipefail

namespace="${NAMESPACE:-stockade-system}"
ca_secret="${CA_SECRET:-stockade-ca}"
secret="${SECRET:-stockade-agent-tls}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
umask 077

secret_field() { # secret key -> decoded value
  kubectl -n "$namespace" get secret "$1" -o "jsonpath={.data.${2//./\\.}}" | base64 -d
}

secret_field "$ca_secret" tls.crt >"$work/ca.crt"
secret_field "$ca_secret" tls.key >"$work/ca.key"
if [[ ! -s "$work/ca.crt" || ! -s "$work/ca.key" ]]; then
  echo "agent-certs: Secret $namespace/$ca_secret has no tls.crt/tls.key (is cert-manager done?)" >&2
  exit 1
fi

nodes="$(kubectl get nodes -o 'jsonpath={range .items[*]}{.metadata.name}{","}{end}')"
nodes="${nodes%,}"
if [[ -z "$nodes" ]]; then
  echo "agent-certs: no nodes" >&2
  exit 1
fi

# An existing CA in --out is reused: the certificates chain to the one the brain trusts.
stockade certs init --out "$work" --nodes "$nodes" --brain-names "stockade-brain.$namespace.svc" >/dev/null

files=(--from-file=ca.crt="$work/ca.crt")
for f in "$work"/nodes/*.crt "$work"/nodes/*.key; do
  files+=(--from-file="$(basename "$f")=$f")
done
kubectl -n "$namespace" create secret generic "$secret" "${files[@]}" --dry-run=client -o yaml \
  | kubectl -n "$namespace" label --local -f - app.kubernetes.io/part-of=stockade -o yaml \
  | kubectl apply -f -
echo "agent-certs: $secret holds certificates for: ${nodes//,/ }"
