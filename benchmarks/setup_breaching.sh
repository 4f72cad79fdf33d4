#!/usr/bin/env bash
# Creates .venv-breaching: breaching 0.1.2 (the reference framework of the speed benchmark) in its own
# virtual environment, so it never becomes a dependency of fedleak. Idempotent: a second run is a no-op.
#
# torch is deliberately NOT installed there: a .pth file appends fedleak's site-packages to the end of
# breaching's sys.path, so both frameworks run the very same torch build (same kernels, same threads)
# and the benchmark compares the frameworks, not two torch wheels. breaching's own packages (breaching,
# hydra-core, omegaconf) come first on its path and shadow nothing of fedleak's, which is never edited.
#
# Usage: benchmarks/setup_breaching.sh [FEDLEAK_PYTHON]   (default: .venv/bin/python)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
main_python="${1:-$root/.venv/bin/python}"
venv="${BREACHING_VENV:-$root/.venv-breaching}"
stamp="$venv/.breaching-0.1.2-installed"

if [ -f "$stamp" ] && "$venv/bin/python" -c "import breaching, torch" >/dev/null 2>&1; then
    exit 0
fi

# the same base interpreter as fedleak's venv: the borrowed site-packages hold compiled extensions
base_python="$("$main_python" -c 'import sys; print(getattr(sys, "_base_executable", sys.executable))')"
"$base_python" -m venv "$venv"
main_site="$("$main_python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
venv_site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
echo "$main_site" > "$venv_site/zz_fedleak_torch.pth"  # zz: processed last, so appended last

# --no-deps: its torch/torchvision/scipy/lpips are the borrowed ones; hydra-core is all it adds
"$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps "breaching==0.1.2"
"$venv/bin/python" -m pip install -q --disable-pip-version-check "hydra-core>=1.1,<1.4"
"$venv/bin/python" -c "import breaching, torch; print('breaching ready:', torch.__version__)" >&2
touch "$stamp"
