# Sourced by the scripts: one shared target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
# the virtualenv with the quantum SDKs (scripts/setup)
export VIGIL_VENV="${VIGIL_VENV:-$HOME/.cache/vigil-py}"
