#!/usr/bin/env bash
# Fuzz smoke test: builds every cargo-fuzz target, then runs each from its
# checked-in seed corpus (fuzz/seeds/TARGET, which also holds the inputs of
# crashes found and fixed: each run replays them first) for a while.
#
#   bash fuzz/smoke.sh                 # every target, 30 s each, two at a time
#   FUZZ_SECONDS=600 FUZZ_JOBS=1 FUZZ_SANITIZER=address bash fuzz/smoke.sh role_policy   # a long run
#
# The toolchain is stable: RUSTC_BOOTSTRAP=1 lets cargo-fuzz pass its
# nightly-only flags. Installs cargo-fuzz when it is missing. The corpus a
# run grows stays in fuzz/target/smoke/ (not committed); a failing input
# goes to fuzz/artifacts/TARGET/ and the script exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"

seconds="${FUZZ_SECONDS:-30}"
jobs="${FUZZ_JOBS:-2}"
# No sanitizer by default: the smoke run is for CI, where the AddressSanitizer
# build of every dependency (tokio, axum, rustls) more than doubles the build
# time; the code is `forbid(unsafe_code)` and panics, failed assertions,
# timeouts and out-of-memory are caught either way. Long runs should use
# FUZZ_SANITIZER=address (fuzz/README records them).
sanitizer="${FUZZ_SANITIZER:-none}"
target_dir="${FUZZ_TARGET_DIR:-target}"
export RUSTC_BOOTSTRAP=1

command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked

if [ $# -gt 0 ]; then targets=("$@"); else mapfile -t targets < <(cargo fuzz list); fi
for t in "${targets[@]}"; do
  if [ ! -d "seeds/$t" ]; then
    echo "warning: fuzz/seeds/$t is missing (add a seed corpus); running $t from an empty one" >&2
    mkdir -p "target/smoke/empty-seeds/$t"
  fi
done

t0=$SECONDS
cargo fuzz build -s "$sanitizer" --target-dir "$target_dir"
echo "fuzz build: $((SECONDS - t0)) s"

host="$(rustc -vV | sed -n 's/^host: //p')"
bin_dir="$target_dir/$host/release"
out="target/smoke"
mkdir -p "$out"

# Runs one target for $seconds from its seeds (new inputs go to $out/TARGET); prints one line.
run_one() {
  local t="$1" corpus="$out/$1"
  mkdir -p "$corpus" "artifacts/$t"
  local seeds="seeds/$t"
  [ -d "$seeds" ] || seeds="$out/empty-seeds/$t"
  if "$bin_dir/$t" "$corpus" "$seeds" -max_total_time="$seconds" -timeout=10 \
      -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
      >"$out/$t.log" 2>&1; then
    local runs
    runs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$out/$t.log" | tail -n 1)"
    echo "$t: ok, ${runs:-?} runs in ${seconds} s, corpus $(ls "$corpus" | wc -l) inputs"
  else
    echo "$t: FAILED (log: fuzz/$out/$t.log, input in fuzz/artifacts/$t/)"
    tail -n 30 "$out/$t.log" >&2
    return 1
  fi
}
export -f run_one
export seconds bin_dir out

t1=$SECONDS
status=0
printf '%s\n' "${targets[@]}" | xargs -P "$jobs" -I{} bash -c 'run_one "$@"' _ {} || status=1
echo "fuzz runs: $((SECONDS - t1)) s for ${#targets[@]} targets, $jobs at a time"
exit $status
