#!/usr/bin/env bash
# nextdest: set up what is missing, then run the pipeline (or the tests).
#
#   ./run.sh                                   all stages on configs/base.yaml (synthetic 'small' data)
#   ./run.sh test [pytest args]                set up, then run the test suite
#   ./run.sh --config configs/medium.yaml      another experiment (its name = the file's name)
#   ./run.sh --only blend                      one stage (repeatable, or a comma list); cached inputs reused
#   ./run.sh --from candidates                 that stage and every later one
#   ./run.sh --force                           rerun the selected stages even when cached
#   ./run.sh --isolate                         every stage in its own Python process (automatic on real-size
#                                              data: the official files or the full preset); else one process
#   ./run.sh train.epochs=2 cv.train_folds=[0] dotted overrides, passed to every stage
#
# PYTHON=/path/to/python uses that interpreter as it is (no venv, no installs).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")"
ROOT=$(pwd)

setup() {
  if [[ -n "${PYTHON:-}" ]]; then
    PY=$PYTHON
  elif python3 scripts/check_requirements.py requirements.txt >/dev/null 2>&1; then
    PY=$(command -v python3)
  else
    if [[ ! -x .venv/bin/python ]]; then
      echo "[setup] creating .venv ($(python3 --version))"
      python3 -m venv .venv
    fi
    PY=$ROOT/.venv/bin/python
    if ! "$PY" scripts/check_requirements.py requirements.txt; then
      echo "[setup] installing requirements.txt into .venv"
      "$PY" -m pip install -q --upgrade pip >/dev/null 2>&1 || true
      "$PY" -m pip install -q -r requirements.txt
    fi
    # Make the package importable from the venv itself (python -m nextdest after activating it).
    if ! env -u PYTHONPATH "$PY" -c "import nextdest" 2>/dev/null; then
      echo "$ROOT/src" > "$("$PY" -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/nextdest-src.pth"
    fi
  fi
  export PYTHONPATH="$ROOT/src${PYTHONPATH:+:$PYTHONPATH}"
  export PYTHONUNBUFFERED=1
  echo "[setup] python: $PY"
}

# The stages, in order, and the command of each ("name script [args]" lines on stdin): the package
# derives them from its registry of models and rankers (python -m nextdest stages --plain).
load_stages() {
  STAGES=()
  declare -gA COMMAND=()
  local name cmd
  while read -r name cmd; do
    STAGES+=("$name")
    COMMAND[$name]=$cmd
  done
  [[ ${#STAGES[@]} -gt 0 ]] || { echo "could not list the stages (python -m nextdest stages)" >&2; exit 1; }
}

check_stage() {
  [[ -n ${COMMAND[$1]:-} ]] && return 0
  echo "unknown stage '$1' (stages: ${STAGES[*]})" >&2
  return 1
}

if [[ "${1:-}" == "test" ]]; then
  shift
  setup
  exec "$PY" -m pytest "$@"
fi

CONFIG=configs/base.yaml
FORCE=()
ISOLATE=()
ONLY=()
FROM=""
OVERRIDES=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --config) CONFIG=$2; shift 2 ;;
    --config=*) CONFIG=${1#*=}; shift ;;
    --only) IFS=, read -ra more <<<"$2"; ONLY+=("${more[@]}"); shift 2 ;;
    --only=*) IFS=, read -ra more <<<"${1#*=}"; ONLY+=("${more[@]}"); shift ;;
    --from) FROM=$2; shift 2 ;;
    --from=*) FROM=${1#*=}; shift ;;
    --force) FORCE=(--force); shift ;;
    --isolate) ISOLATE=(--isolate); shift ;;
    -h|--help) sed -n '2,14p' "$0"; exit 0 ;;
    -*) echo "unknown option $1 (see ./run.sh --help)" >&2; exit 2 ;;
    *=*) OVERRIDES+=("$1"); shift ;;
    *) echo "unexpected argument '$1' (see ./run.sh --help)" >&2; exit 2 ;;
  esac
done
[[ -f $CONFIG ]] || { echo "config file not found: $CONFIG" >&2; exit 2; }

setup
# One run per experiment: check the whole config and take artifacts/<experiment>/.lock for this
# shell before any stage starts (a second run of the experiment is refused, naming this one); the
# stage processes find the lock held by their run (NEXTDEST_LOCK_HOLDER). Released on exit; if this
# shell is killed, the next run takes the stale lock over. The same call prints the stage list.
export NEXTDEST_LOCK_HOLDER=$$
PLAN=$("$PY" -m nextdest lock --stages --config "$CONFIG" "${OVERRIDES[@]}")
trap '"$PY" -m nextdest unlock --config "$CONFIG"' EXIT
load_stages <<<"$PLAN"
SELECTED=()
if [[ ${#ONLY[@]} -gt 0 ]]; then
  for s in "${ONLY[@]}"; do check_stage "$s"; SELECTED+=("$s"); done
elif [[ -n $FROM ]]; then
  check_stage "$FROM"
  on=0
  for s in "${STAGES[@]}"; do [[ $s == "$FROM" ]] && on=1; [[ $on == 1 ]] && SELECTED+=("$s"); done
else
  SELECTED=("${STAGES[@]}")
fi

"$PY" -m nextdest run --config "$CONFIG" "${FORCE[@]}" "${ISOLATE[@]}" "${SELECTED[@]}" "${OVERRIDES[@]}"
