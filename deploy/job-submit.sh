#!/usr/bin/env bash
# Submit a study to a running Ray cluster as a Ray job (`ray job submit --runtime-env-json`). The study driver then
# runs on the cluster's head, not on this machine: closing this terminal (or --no-wait) does not stop the study.
#
#   RAY_ADDRESS=http://127.0.0.1:8265 deploy/job-submit.sh lambda_sensitivity resources.autoscaling=true ...
#   ray job logs --follow dastudy-...   /   ray job stop dastudy-...   (the id is printed)
#
# RAY_ADDRESS: the cluster's dashboard (job server) address, e.g. a `kubectl port-forward svc/dastudy-head-svc 8265`
# or an SSH tunnel to a `ray up` head; keep it off untrusted networks. With token authentication (the default for
# Ray 2.60 clusters) set RAY_AUTH_MODE=token and the cluster's token (RAY_AUTH_TOKEN or ~/.ray/auth_token).
# Environment: DASTUDY_STORAGE (default /mnt/shared/studies: a path every node mounts, or s3://...), NO_WAIT=1 to
# return at once, SUBMISSION_ID to name the job (default dastudy-<study>-<time>), DASTUDY_ACTION=resume to resume.
# The cluster's nodes must already hold the dastudy environment (the image of deploy/Dockerfile); the runtime env
# here only sets environment variables, it installs nothing.
set -euo pipefail

: "${RAY_ADDRESS:?set RAY_ADDRESS to the job server of the cluster, e.g. http://127.0.0.1:8265}"
STORAGE=${DASTUDY_STORAGE:-/mnt/shared/studies}
ACTION=${DASTUDY_ACTION:-run}
if [ "$#" -lt 1 ]; then
  echo "usage: RAY_ADDRESS=http://HEAD:8265 $0 PRESET_OR_FILE [KEY=VALUE ...]" >&2
  exit 2
fi
STUDY=$1
shift
SUBMISSION_ID=${SUBMISSION_ID:-dastudy-$(basename "${STUDY%.toml}")-$(date +%Y%m%d-%H%M%S)}
PYTHON=${PYTHON:-python3}

# The driver's environment on the cluster: where studies live, quiet Ray; JSON built by Python (no quoting bugs).
RUNTIME_ENV=$("$PYTHON" -c 'import json, sys; print(json.dumps({"env_vars": {
    "DASTUDY_STORAGE": sys.argv[1], "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1"}}))' "$STORAGE")

if [ "$ACTION" = resume ]; then
  CMD=(dastudy study resume "$STUDY" --address auto --storage "$STORAGE")
else
  CMD=(dastudy study run "$STUDY" "$@" --address auto --storage "$STORAGE")
fi
WAIT=()
[ -n "${NO_WAIT:-}" ] && WAIT=(--no-wait)

echo "submission id: $SUBMISSION_ID"
# --entrypoint-num-cpus 0: the driver reserves no CPU, so it runs on a head that hosts no trials (num-cpus 0)
exec ray job submit --address "$RAY_ADDRESS" --submission-id "$SUBMISSION_ID" --entrypoint-num-cpus 0 \
  --runtime-env-json "$RUNTIME_ENV" "${WAIT[@]}" -- "${CMD[@]}"
