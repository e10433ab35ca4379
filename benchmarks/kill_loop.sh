#!/usr/bin/env bash
# The tests that SIGKILL (or freeze) a study driver and resume it, ROUNDS times in a row, each round in a fresh
# TMPDIR, with one extra process spinning a CPU the whole time (the load). Not a test: a reliability measurement
# for docs/reliability.md ("Driver-kill tests").
#
#   benchmarks/kill_loop.sh [ROUNDS] [OUT_DIR]      (defaults: 10, ./kill_loop.out)
#
# One line per round goes to OUT_DIR/summary.txt (round, passed/failed counts, seconds, load average); each round's
# pytest output is OUT_DIR/round_N.log. The spinner and nothing else is stopped at the end, by its PID.
# KILL_LOOP_K, when set, is passed to pytest as -k (e.g. "not copied_or_moved" to leave out the 5-minute one).
set -u
ROUNDS=${1:-10}
OUT=${2:-kill_loop.out}
cd "$(dirname "$0")/.."
mkdir -p "$OUT"
PY=${PYTHON:-.venv/bin/python}
TESTS=(
  "tests/reliability/test_reliability_driver_kill.py::test_study_survives_driver_kills_at_trial_start_checkpoint_and_evaluation"
  "tests/study/test_object_storage.py::test_study_in_the_bucket_resumes_on_a_new_head"
  "tests/study/test_lease_s3.py::test_a_dead_drivers_lease_is_taken_over_after_its_ttl_and_not_before"
  "tests/study/test_lease_s3.py::test_a_resume_waits_out_a_dead_drivers_lease_and_is_refused_by_a_live_one"
  "tests/study/test_lease_s3.py::test_a_driver_whose_lease_was_taken_is_told_and_stops_uploading"
  "tests/study/test_lease_postgres.py::test_a_killed_drivers_lock_goes_with_it_and_a_frozen_ones_after_the_ttl"
  "tests/study/test_old_layout.py::test_a_study_killed_under_the_flat_layout_resumes_to_the_end_with_the_layers"
  "tests/study/test_pbt_ray.py::test_a_pbt_study_survives_a_driver_kill_with_no_member_repeated_or_lost[True]"
  "tests/study/test_tune_resume.py::test_resume_after_driver_sigkill"
  "tests/study/test_tune_resume.py::test_a_copied_or_moved_study_resumes_where_it_is_and_writes_only_there"
  "tests/study/test_pbt_ray.py::test_a_pbt_study_survives_a_driver_kill_with_no_member_repeated_or_lost[False]"
  "tests/study/test_replicates_ray.py::test_replicates_survive_a_driver_kill_in_the_middle_of_a_configuration"
)
"$PY" -c "while True: pass" &
SPINNER=$!
trap 'kill "$SPINNER" 2>/dev/null' EXIT
for i in $(seq 1 "$ROUNDS"); do
  start=$(date +%s)
  TMPDIR=$(mktemp -d "${TMPDIR:-/tmp}/killloop.XXXX") "$PY" -m pytest -q -p no:cacheprovider -o addopts= \
    -m "extended or not extended" ${KILL_LOOP_K:+-k "$KILL_LOOP_K"} -rf "${TESTS[@]}" > "$OUT/round_$i.log" 2>&1
  tally=$(grep -E "^[0-9]+ (passed|failed)|^=+ .*(passed|failed)" "$OUT/round_$i.log" | tail -1 | tr -d '=')
  echo "round $i: ${tally:-no summary} | $(( $(date +%s) - start )) s | load $(cut -d' ' -f1-3 /proc/loadavg)" \
    | tee -a "$OUT/summary.txt"
done
