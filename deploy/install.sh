#!/usr/bin/env bash
# Install issue-bridge for production: the one install path of the kit. The container image (deploy/Containerfile)
# runs it, and so does the CI deployment test (tests/test_deploy_kit.py), outside any container.
#
#   deploy/install.sh --source DIR --wheel-only OUT        build the wheel from a checkout into OUT, and stop
#   deploy/install.sh [--wheel FILE | --source DIR] [--prefix /opt/issue-bridge] [--home /srv/issue-bridge]
#                     [--user issue-bridge] [--no-env-file] [--python python3]
#
# Without --wheel it builds one from --source (default: the checkout this script is in). Then:
#   PREFIX/releases/<wheel>-<time>/  a fresh virtualenv with `issue-bridge[postgres]` installed from the wheel
#   PREFIX/venv                      a symlink to it, switched once the install succeeded (what the units run);
#                                    the three newest releases are kept (roll back by pointing the link back)
#   HOME/.env                  the settings, from deploy/issue-bridge.env, only if there is none (mode 0640)
#   HOME/mappings/             your mapping files (left as they are)
#   HOME/var/                  BRIDGE_DATA_DIR: beat's schedule file; writable by the service user
# --user creates that system user (when run as root) and gives it HOME/var and read access to HOME/.env.
# Running processes keep the release they started with until they are restarted.
set -euo pipefail

kit="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
source_dir="$(dirname "$kit")"
wheel=""
wheel_only=""
prefix=/opt/issue-bridge
home=/srv/issue-bridge
user=""
env_file=1
python="${PYTHON:-python3}"

die() { echo "install.sh: $*" >&2; exit 1; }

while [ $# -gt 0 ]; do
  case "$1" in
    --source) source_dir="$2"; shift 2 ;;
    --wheel) wheel="$2"; shift 2 ;;
    --wheel-only) wheel_only="$2"; shift 2 ;;
    --prefix) prefix="$2"; shift 2 ;;
    --home) home="$2"; shift 2 ;;
    --user) user="$2"; shift 2 ;;
    --no-env-file) env_file=""; shift ;;
    --python) python="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set /{/^set /d;s/^# \{0,1\}//;p}' "${BASH_SOURCE[0]}"; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

"$python" -c 'import sys, venv, ensurepip; sys.exit(sys.version_info < (3, 11))' 2>/dev/null \
  || die "$python is not a Python 3.11+ with venv and ensurepip (Debian: apt-get install python3-venv)"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

build_wheel() {  # $1: output folder
  [ -f "$source_dir/pyproject.toml" ] || die "no pyproject.toml in $source_dir: pass --source or --wheel"
  # Build from a clean copy, so the checkout gets no build/ or egg-info and local state (.venv, var) stays out.
  mkdir -p "$work/src" "$1"
  tar -C "$source_dir" --exclude=./.git --exclude=./.venv --exclude=./var --exclude=./build --exclude=./dist \
    --exclude='*.egg-info' --exclude=__pycache__ --exclude=./.env -cf - . | tar -C "$work/src" -xf -
  "$python" -m venv "$work/build-env"
  "$work/build-env/bin/python" -m pip wheel --quiet --no-deps --wheel-dir "$1" "$work/src"
}

if [ -n "$wheel_only" ]; then
  build_wheel "$wheel_only"
  ls "$wheel_only"/issue_bridge-*.whl
  exit 0
fi

if [ -z "$wheel" ]; then
  build_wheel "$work/dist"
  wheel="$(ls "$work"/dist/issue_bridge-*.whl)"
fi
[ -f "$wheel" ] || die "no such wheel: $wheel"
wheel="$(cd "$(dirname "$wheel")" && pwd)/$(basename "$wheel")"

# A new folder per install: the running processes keep theirs until they are restarted.
release="$prefix/releases/$(basename "$wheel" .whl)-$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$prefix/releases"
trap 'rm -rf "$work"; [ -e "$prefix/venv" ] && [ "$(readlink "$prefix/venv")" = "$release" ] || rm -rf "$release"' EXIT
"$python" -m venv "$release"
"$release/bin/python" -m pip install --quiet "issue-bridge[postgres] @ file://$wheel"
"$release/bin/python" -c 'import bridge.web, psycopg' || die "the installed release does not import"
ln -sfn "$release" "$prefix/venv.new" && mv -T "$prefix/venv.new" "$prefix/venv"
# Keep the three newest releases (the one just installed included).
ls -1dt "$prefix"/releases/*/ | tail -n +4 | while read -r old; do rm -rf "$old"; done

mkdir -p "$home/mappings" "$home/var"
if [ -n "$env_file" ] && [ ! -e "$home/.env" ]; then
  install -m 0640 "$kit/issue-bridge.env" "$home/.env"
fi
if [ -n "$user" ]; then
  [ "$(id -u)" = 0 ] || die "--user needs root (to create the user and hand it $home/var)"
  id -u "$user" >/dev/null 2>&1 \
    || useradd --system --user-group --home-dir "$home" --no-create-home --shell /usr/sbin/nologin "$user"
  chown -R "$user:$user" "$home/var"
  chmod 0750 "$home/var"
  [ -e "$home/.env" ] && chown "root:$user" "$home/.env"
fi

echo "installed $(basename "$wheel") into $release ($prefix/venv); home $home"
