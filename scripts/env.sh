# Sourced by the scripts: one shared target directory outside the clone.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/vigil-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
