#!/usr/bin/env bash
# obp 0.5.7's own virtual environment, OUTSIDE the repository (obp is no dependency of closedloop: it is only the
# reference that tests/evaluation/fixtures/obp_0_5_7.json was measured with, and bench/ope.py times against).
#   bash bench/obp_env.sh [VENV_DIR]        (default /tmp/obp-venv; idempotent: re-running installs nothing new)
# obp 0.5.7 pins old exact versions (Python <3.11, numpy==1.23.5, pandas==1.5.2, torch==1.12, …);
# --no-deps --ignore-requires-python installs it as it is, and the packages it imports are installed beside it at
# versions that still run its code (pandas 1.5.3, numpy<2, scikit-learn<1.6).
# torch==2.13.0: plain 'pip install torch==2.13.0' finds the CPU wheel (2.13.0+cpu) that pip is configured to take from
# local disk here; obp imports torch at import time but the estimators used here do not need it.
set -euo pipefail
VENV="${1:-/tmp/obp-venv}"
REPO="$(cd "$(dirname "$0")/.." && pwd -P)"
case "$(realpath -m "$VENV")" in
  "$REPO" | "$REPO"/*) echo "obp_env.sh: the venv must live outside the repository (got $VENV)" >&2; exit 2 ;;
esac
if [ ! -x "$VENV/bin/python" ]; then
  python3 -m venv "$VENV"
fi
PY="$VENV/bin/python"
PIP=("$PY" -m pip install --disable-pip-version-check -q)
have() { "$PY" -c "import importlib.metadata as m, sys; sys.exit(0 if m.version('$1').startswith('$2') else 1)" 2>/dev/null; }
have torch 2.13.0 || "${PIP[@]}" torch==2.13.0
have pandas 1.5.3 || "${PIP[@]}" pandas==1.5.3 'numpy<2'
"${PIP[@]}" 'numpy<2' 'scikit-learn<1.6' scipy matplotlib seaborn tqdm pyyaml
have obp 0.5.7 || "${PIP[@]}" --no-deps --ignore-requires-python obp==0.5.7
"$PY" -c "import obp, numpy, pandas, torch
print('obp', obp.__version__, 'numpy', numpy.__version__, 'pandas', pandas.__version__, 'torch', torch.__version__)"
