#!/usr/bin/env bash
# Installs Fashion-MNIST for the studies (docs/results/). Debian's package dataset-fashion-mnist puts the four IDX files,
# gzipped, straight into /usr/share/datasets/fashion-mnist, a flat folder transferlab reads as it is:
#   --source "fashion_mnist(root='/usr/share/datasets/fashion-mnist')"
# Run as root on Debian, this installs that package with apt-get; elsewhere it says how to get the files (torchvision's
# download). It exits 0 once the files are there, else 1; running it again changes nothing. FASHION_MNIST_DIR names
# another folder to check instead (never installed into). Only shell builtins run unless apt-get does.
set -euo pipefail

dir=${FASHION_MNIST_DIR:-/usr/share/datasets/fashion-mnist}
files=(train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte)

installed() {  # all four files in $dir, plain or .gz
  local f
  for f in "${files[@]}"; do [ -f "$dir/$f.gz" ] || [ -f "$dir/$f" ] || return 1; done
}

if ! installed && [ -z "${FASHION_MNIST_DIR:-}" ] && [ "$EUID" = 0 ] && [ -r /etc/debian_version ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  { apt-get install -y -qq --no-install-recommends dataset-fashion-mnist \
    || { apt-get update -qq && apt-get install -y -qq --no-install-recommends dataset-fashion-mnist; }; } >/dev/null || true
fi

if installed; then
  echo "Fashion-MNIST is in $dir: use --source \"fashion_mnist(root='$dir')\""
  exit 0
fi
printf '%s\n' "Fashion-MNIST is not in $dir. Either:" \
  "  - on Debian, as root: apt-get install dataset-fashion-mnist (or run this script as root), then use" \
  "    --source \"fashion_mnist(root='/usr/share/datasets/fashion-mnist')\"; or" \
  "  - let torchvision download it once (needs the internet): transferlab subset --source \"fashion_mnist(root='~/data', download=True)\"," \
  "    then use --source \"fashion_mnist(root='~/data')\" (files in ~/data/FashionMNIST/raw)" >&2
exit 1
