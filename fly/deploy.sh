#!/usr/bin/env bash
# Deploys FireScroll to many Fly.io regions. Idempotent: run it again to add regions or
# machines, or to roll out a new build; what exists already is left as it is.
#
#   fly/deploy.sh --app NAME --regions ams,iad,sin [--count 2] [--org ORG] [--volume-gb 10]
#                 [--tigris] [--dry-run]
#
# Secrets come from this shell's environment, when set: KAFKA_SEEDS (required: the log),
# KAFKA_USER, KAFKA_PASS, KAFKA_TLS, KAFKA_SASL_MECHANISM, READ_TOKENS, WRITE_TOKENS,
# ADMIN_TOKENS, GOSSIP_KEYS, S3_BUCKET, S3_ENDPOINT, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY. --tigris
# creates a Tigris bucket instead (`fly storage create` sets the S3 secrets itself).
# --dry-run prints every fly command it would run, and runs none (it then assumes nothing exists).
set -euo pipefail
cd "$(dirname "$0")/.."

app="" regions="" count=1 org="" volume_gb=10 tigris=0 dry_run=0
usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-2}"; }
while [ $# -gt 0 ]; do
    case "$1" in
        --app) app="${2:?--app needs a name}"; shift 2 ;;
        --regions) regions="${2:?--regions needs a list like ams,iad}"; shift 2 ;;
        --count) count="${2:?--count needs a number}"; shift 2 ;;
        --org) org="${2:?--org needs a name}"; shift 2 ;;
        --volume-gb) volume_gb="${2:?--volume-gb needs a number}"; shift 2 ;;
        --tigris) tigris=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        -h|--help) usage 0 ;;
        *) echo "deploy.sh: unknown argument $1" >&2; usage ;;
    esac
done
[ -n "$app" ] || { echo "deploy.sh: --app NAME is required" >&2; usage; }
[ -n "$regions" ] || { echo "deploy.sh: --regions a,b,c is required" >&2; usage; }
[[ "$count" =~ ^[1-9][0-9]*$ ]] || { echo "deploy.sh: --count must be 1 or more" >&2; exit 2; }
[ -n "${KAFKA_SEEDS:-}" ] || [ "$dry_run" = 1 ] || {
    echo "deploy.sh: set KAFKA_SEEDS (the log every region consumes; see fly/README.md)" >&2; exit 2; }
IFS=, read -r -a region_list <<<"$regions"
primary="${region_list[0]}"
volume="firescroll_data"

# Runs a fly command, or prints it on a dry run. Secret values never reach the output.
fly_run() {
    local shown=()
    for arg in "$@"; do
        case "$arg" in *=*) [ "$1" = secrets ] && arg="${arg%%=*}=***" ;; esac
        shown+=("$arg")
    done
    echo "+ fly ${shown[*]}"
    [ "$dry_run" = 1 ] || fly "$@"
}
# Read-only queries: on a dry run, nothing exists.
fly_query() { [ "$dry_run" = 1 ] && return 1; fly "$@" 2>/dev/null; }

[ "$dry_run" = 1 ] || command -v fly >/dev/null || {
    echo "deploy.sh: flyctl is not installed: https://fly.io/docs/flyctl/install/" >&2; exit 2; }

# 1. The app.
if fly_query status --app "$app" >/dev/null; then
    echo "app $app exists"
else
    fly_run apps create "$app" ${org:+--org "$org"}
fi

# 2. Secrets (staged: the deploy below picks them up in one restart).
secrets=()
for name in KAFKA_SEEDS KAFKA_USER KAFKA_PASS KAFKA_TLS KAFKA_SASL_MECHANISM READ_TOKENS \
    WRITE_TOKENS ADMIN_TOKENS GOSSIP_KEYS S3_BUCKET S3_ENDPOINT AWS_ACCESS_KEY_ID AWS_SECRET_ACCESS_KEY; do
    [ -n "${!name:-}" ] && secrets+=("$name=${!name}")
done
[ "$dry_run" = 1 ] && [ -z "${KAFKA_SEEDS:-}" ] && secrets+=("KAFKA_SEEDS=<your brokers>")
[ ${#secrets[@]} -gt 0 ] && fly_run secrets set --app "$app" --stage "${secrets[@]}"

# 3. Snapshots on Tigris (sets BUCKET_NAME, AWS_ENDPOINT_URL_S3, AWS_REGION and keys as secrets).
if [ "$tigris" = 1 ]; then
    if fly_query storage list --json | grep -q "\"$app-snapshots\""; then
        echo "bucket $app-snapshots exists"
    else
        fly_run storage create --app "$app" --name "$app-snapshots" --yes
    fi
fi

# 4. One volume per machine per region.
for region in "${region_list[@]}"; do
    have=0
    if listed=$(fly_query volumes list --app "$app" --json); then
        have=$(python3 -c "import json,sys; print(sum(1 for v in json.loads(sys.argv[3]) if v.get('Region', v.get('region')) == sys.argv[1] and v.get('Name', v.get('name')) == sys.argv[2]))" \
            "$region" "$volume" "$listed")
    fi
    for _ in $(seq $((have + 1)) "$count"); do
        fly_run volumes create "$volume" --app "$app" --region "$region" --size "$volume_gb" --yes
    done
done

# 5. Build and roll out (the first deploy creates one machine in the primary region). The
# template with this app's name and primary region goes next to it (its Dockerfile path is
# relative to it).
config="fly/fly.$app.toml"
echo "+ write $config: fly/fly.toml with app = \"$app\", primary_region = \"$primary\""
[ "$dry_run" = 1 ] ||
    sed -e "s/^app = .*/app = \"$app\"/" -e "s/^primary_region = .*/primary_region = \"$primary\"/" \
        fly/fly.toml >"$config"
fly_run deploy . --config "$config" --dockerfile fly/Dockerfile --app "$app" --strategy rolling --yes

# 6. Machines per region: one per volume.
for region in "${region_list[@]}"; do
    fly_run scale count "$count" --region "$region" --app "$app" --yes
done
echo "deployed $app to ${regions} ($count per region): https://$app.fly.dev/ready"
