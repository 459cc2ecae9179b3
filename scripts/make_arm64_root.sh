#!/usr/bin/env bash
# An emulated aarch64 "board" for RPC tests: a Debian arm64 root with Python 3.11 and TVM's runtime
# at /opt/tvm, run under qemu-user through binfmt. Needs root and Debian's package mirrors and PyPI.
#   scripts/make_arm64_root.sh /tmp/arm64
#   TVMLAT_ARM64_ROOT=/tmp/arm64 python -m pytest -m slow tests/integration/test_rpc_qemu.py
# A server by hand: chroot /tmp/arm64 env TVM_USE_RUNTIME_LIB=1 PYTHONPATH=/opt/tvm \
#   python3 -m tvm.exec.rpc_server --tracker 127.0.0.1:9190 --key rpi4 --host 127.0.0.1
set -euo pipefail
ROOT=${1:?usage: $0 ROOT_DIR}
PY=${PYTHON:-python3}
apt-get install -y -q debootstrap qemu-user-static binfmt-support gcc-aarch64-linux-gnu
[ -e /proc/sys/fs/binfmt_misc/register ] || mount binfmt_misc -t binfmt_misc /proc/sys/fs/binfmt_misc
update-binfmts --enable qemu-aarch64
[ -x "$ROOT/usr/bin/python3" ] || debootstrap --arch=arm64 --variant=minbase --include=python3,python3-numpy \
    bookworm "$ROOT" http://deb.debian.org/debian
W=$(mktemp -d)
"$PY" -m pip download -q apache-tvm==0.27.0.post1 apache-tvm-ffi==0.1.14.post1 typing_extensions psutil cloudpickle \
    --platform manylinux_2_28_aarch64 --platform manylinux2014_aarch64 --python-version 3.11 \
    --only-binary=:all: -d "$W"
mkdir -p "$ROOT/opt/tvm"
for w in "$W"/*.whl; do "$PY" -m zipfile -e "$w" "$ROOT/opt/tvm"; done
rm -f "$ROOT/opt/tvm/tvm/lib/libtvm_compiler.so"   # the board needs the runtime only
rm -rf "$W"
chroot "$ROOT" env TVM_USE_RUNTIME_LIB=1 PYTHONPATH=/opt/tvm python3 -c \
    "import tvm, platform; print('TVM', tvm.__version__, 'runtime on', platform.machine())"
