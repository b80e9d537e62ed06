#!/usr/bin/env bash
# Sets up what the test suite needs, and only what is missing, so running it again changes nothing: Python's venv module,
# PostgreSQL, the virtual environment .venv with transferlab and its test extras, and WordNet 3.0. The README's test command runs
# it before pytest (CI runs that command). Run as root on Debian it installs system packages with apt-get; elsewhere
# it fetches WordNet with nltk's downloader, and says in one line what to do when neither can work.
set -euo pipefail
cd "$(dirname "$0")/.."

fail() { echo "tests/setup.sh: $*" >&2; exit 1; }

apt_updated=
debian_install() {  # install Debian packages when root on Debian (the package lists updated once); else return 1
  [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null || return 1
  export DEBIAN_FRONTEND=noninteractive
  [ -n "$apt_updated" ] || { apt-get update -qq && apt_updated=1; } || return 1
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# System packages the suite needs before the venv exists; more services' packages go here, as `check || debian_install pkg`.
python3 -c 'import ensurepip' 2>/dev/null || debian_install python3-venv || true  # Debian's python3 makes no venv without it
# A real PostgreSQL server for the search storage's tests (tests/postgres.py starts one); Debian keeps its programs off PATH.
has_postgres() { compgen -G "${TRANSFERLAB_POSTGRES_BIN:-/usr/lib/postgresql/*/bin}/initdb" >/dev/null || command -v initdb >/dev/null; }
has_postgres || debian_install postgresql || true  # without it the PostgreSQL tests fail, saying to run this as root on Debian

[ -x .venv/bin/pip ] || python3 -m venv .venv  # also mends a venv an earlier run made without pip
.venv/bin/pip install -q --disable-pip-version-check -e '.[test]'

# WordNet 3.0 where transferlab looks (transferlab_wordnet/access.py): nltk's data, $TRANSFERLAB_WORDNET_DIR or /usr/share/wordnet.
has_wordnet() { .venv/bin/python -c 'from transferlab_wordnet.access import find_wordnet; find_wordnet()' 2>/dev/null; }
if ! has_wordnet; then
  [ -n "${TRANSFERLAB_WORDNET_DIR:-}" ] || debian_install wordnet-base wordnet-sense-index || true  # fills /usr/share/wordnet
  has_wordnet || .venv/bin/python -W ignore -m nltk.downloader -q wordnet >/dev/null 2>&1 || true  # into nltk's data path
  has_wordnet || fail "the tests need WordNet 3.0: run this as root on Debian (it installs wordnet-base and wordnet-sense-index)," \
    "let nltk's downloader reach ${NLTK_DOWNLOAD_URL:-https://raw.githubusercontent.com/nltk/nltk_data}," \
    "or point TRANSFERLAB_WORDNET_DIR${TRANSFERLAB_WORDNET_DIR:+ (now $TRANSFERLAB_WORDNET_DIR)} at a WordNet 3.0 dict folder"
fi
