# Sourced by scripts/bench, scripts/bench-phases and scripts/build-pgo: the flows warden's
# whole-flow benchmarks run, and build-pgo's training runs, so the profile it records is of the
# work measured; which warden the benchmarks measure; and the stand-in they measure it against.
#
# bench_config FILE PORT WASM_DIR SPIN_WAIT_US: writes a config to FILE whose flows `trivial`,
# `victorops-cache-off` and `victorops-cache-on` run the plugins in WASM_DIR against the
# VictorOps stand-in on 127.0.0.1:PORT (API ID `bench-id`; its key from BENCH_VICTOROPS_KEY),
# the store beside FILE.
bench_config() {
    cat > "$1" <<TOML
[store]
path = "warden.db"

[http]
spin_wait_us = $4

[secrets.key]
source = "env"
name = "BENCH_VICTOROPS_KEY"

[integrations.victorops]
type = "custom"
external_id = "bench-id"
secrets = ["key"]
settings = { api_url = "http://127.0.0.1:$2" }

[environments.main]
integrations = { victorops = "victorops" }

[flows.trivial]
environment = "main"
plugin = "$3/trivial.wasm"

[flows.victorops-cache-off]
environment = "main"
plugin = "$3/victorops.wasm"
allowed_hosts = ["http://127.0.0.1:$2"]
vars = { oncall_cache_seconds = 0 }

[flows.victorops-cache-on]
environment = "main"
plugin = "$3/victorops.wasm"
allowed_hosts = ["http://127.0.0.1:$2"]
vars = { oncall_cache_seconds = 30 }
TOML
}

# bench_warden_bin TARGET_DIR: prints the path of the warden the benchmarks measure, building it
# if need be: WARDEN_BIN when set; else, with PGO=0, the release build; else the release build
# optimised with a profile of its own work (scripts/build-pgo), as it is recommended for
# deployment (docs/deploying.md). Build output goes to standard error.
bench_warden_bin() {
    if [ -n "${WARDEN_BIN:-}" ]; then
        echo "$WARDEN_BIN"
    elif [ "${PGO:-1}" = 0 ]; then
        cargo build --release -p warden >&2
        echo "$1/release/warden"
    else
        scripts/build-pgo | tail -1
    fi
}

# bench_standin TARGET_DIR PORT LOG [PREFIX...]: starts the VictorOps stand-in with the bench
# roster (API ID `bench-id`, key `bench-key`) on 127.0.0.1:PORT under PREFIX (say, `taskset -c
# 0`), its output in LOG, and sets `standin` to its pid; bench_standin_listening then waits for it.
bench_standin() {
    local target=$1 port=$2 log=$3
    shift 3
    "$@" "$target/release/victorops-standin" --roster tests/fixtures/victorops-roster.toml \
        --api-id bench-id --api-key bench-key --port "$port" --quiet > "$log" 2>&1 &
    standin=$!
}

# bench_standin_listening PORT LOG: waits up to 5 s for the stand-in to listen; fails, showing
# its output, if it does not.
bench_standin_listening() {
    for _ in $(seq 50); do
        grep -q "listening on" "$2" 2>/dev/null && return 0
        sleep 0.1
    done
    cat "$2"
    echo "the VictorOps stand-in did not start on port $1" >&2
    return 1
}
