#!/bin/sh
# Set up beyondkd on a fresh machine: the real Fashion-MNIST data (Debian package), a virtual
# environment in .venv with the pinned torch/torchvision, and the package itself.
#   sh scripts/install.sh          # for running beyondkd
#   sh scripts/install.sh --test   # also the test dependencies
# Safe to run again: finished steps are skipped.
set -eu
cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python3}"
EXTRAS=""
[ "${1:-}" = "--test" ] && EXTRAS="[test]"

FMNIST=/usr/share/datasets/fashion-mnist
if [ ! -e "$FMNIST/train-images-idx3-ubyte.gz" ] && [ ! -e "$FMNIST/train-images-idx3-ubyte" ]; then
    echo "installing Debian package dataset-fashion-mnist (real Fashion-MNIST) ..."
    SUDO=""
    [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
    if command -v apt-get >/dev/null 2>&1; then
        $SUDO apt-get update -qq || true
        DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq dataset-fashion-mnist
    else
        echo "error: no apt-get here: put the four Fashion-MNIST idx files in $FMNIST (or pass data.root)" >&2
        exit 1
    fi
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# torch and torchvision are pinned in pyproject.toml (torch==2.14.1, torchvision==0.29.1).
.venv/bin/python -m pip install -q -e ".$EXTRAS"
.venv/bin/python -c "import beyondkd, torch, torchvision; print('beyondkd', beyondkd.__version__, '| torch', torch.__version__, '| torchvision', torchvision.__version__)"
