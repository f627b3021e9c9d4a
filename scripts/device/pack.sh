#!/usr/bin/env bash
# Prepares what scripts/device/card.sh needs on the GPU machine, which has no node and no npm registry, in two
# git-ignored folders of this checkout that the device `run` carries:
#   .device/node.xz          this machine's node binary (x86-64, no shared libraries beyond glibc/libstdc++)
#   .device/runtime.tar.xz   bench/card.ts and src/ compiled to JavaScript (tsc -p tsconfig.card.json), a
#                            package.json, and only the runtime node_modules the bench loads: onnxruntime-node with
#                            its linux-x64 binaries alone, onnxruntime-common, @bufbuild/protobuf, onnx-buf,
#                            @huggingface/tokenizers (not sharp/@img, fastify, commander: the bench does not load them)
#   .gl/*.deb                the Vulkan loader (and GL dispatch) packages the device notes say to carry
# Then checks that the working tree that travels (tracked and untracked-not-ignored files) plus .device and .gl
# stays under the 64 MiB a `run` may carry.
#
#   bash scripts/device/pack.sh            (from the repository root, after npm ci)
set -euo pipefail
ROOT=$(git rev-parse --show-toplevel)
cd "$ROOT"
LIMIT=$((64 * 1024 * 1024))

exclude="$(git rev-parse --git-common-dir)/info/exclude"
for p in /.device/ /.gl/; do grep -qxF "$p" "$exclude" 2>/dev/null || echo "$p" >>"$exclude"; done

if [[ "$(uname -m)" != x86_64 ]]; then
  echo "pack.sh: this machine is $(uname -m); the device is x86-64: carry an x86-64 node and onnxruntime-node instead" >&2
  exit 1
fi
ORT=node_modules/onnxruntime-node
[[ -f $ORT/bin/napi-v6/linux/x64/libonnxruntime.so.1 ]] || { echo "pack.sh: run npm ci first ($ORT/bin/napi-v6/linux/x64 is missing)" >&2; exit 1; }

mkdir -p .device
rm -rf .device/build .device/stage
echo "pack.sh: compiling bench/card.ts and src/ (tsc -p tsconfig.card.json)"
npx tsc -p tsconfig.card.json
cp package.json .device/build/package.json

stage=.device/stage
mkdir -p "$stage/node_modules/onnxruntime-node/bin/napi-v6/linux"
cp -r .device/build "$stage/build"
cp "$ORT/package.json" "$stage/node_modules/onnxruntime-node/"
cp -r "$ORT/dist" "$stage/node_modules/onnxruntime-node/"
[[ -d $ORT/lib ]] && cp -r "$ORT/lib" "$stage/node_modules/onnxruntime-node/"
cp -r "$ORT/bin/napi-v6/linux/x64" "$stage/node_modules/onnxruntime-node/bin/napi-v6/linux/"
for m in onnxruntime-common @bufbuild/protobuf onnx-buf @huggingface/tokenizers; do
  mkdir -p "$stage/node_modules/$(dirname "$m")"
  cp -r "node_modules/$m" "$stage/node_modules/$m"
done
echo "pack.sh: compressing the runtime (xz)"
tar -C "$stage" -cf - build node_modules | xz -9 -T2 >.device/runtime.tar.xz
rm -rf "$stage"

NODE_BIN=$(command -v node)
node_version=$("$NODE_BIN" --version)
if [[ ! -f .device/node.xz || "$(cat .device/node.version 2>/dev/null)" != "$node_version" ]]; then
  echo "pack.sh: compressing $NODE_BIN ($node_version, xz; a minute or two)"
  xz -9 -T2 -c "$NODE_BIN" >.device/node.xz
  echo "$node_version" >.device/node.version
fi

if ! ls .gl/libvulkan1_*.deb >/dev/null 2>&1; then
  echo "pack.sh: downloading the Vulkan loader packages into .gl (amd64)"
  mkdir -p .gl /tmp/amd64/partial
  o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
  # shellcheck disable=SC2086
  apt-get $o update >/dev/null
  # shellcheck disable=SC2086
  (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
fi

# What travels: tracked + untracked-not-ignored files, then the carried folders.
tree=$( (git ls-files -z --cached --others --exclude-standard | xargs -0 -r stat -c %s -- 2>/dev/null || true) | awk '{s+=$1} END {print s+0}')
rm -rf .device/build  # only for local runs; the tarball holds it
carried=$(find .device -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
gl=$(find .gl -type f -printf '%s\n' | awk '{s+=$1} END {print s+0}')
total=$((tree + carried + gl))
mib() { awk -v b="$1" 'BEGIN {printf "%.1f MiB", b / 1048576}'; }
echo "pack.sh: node.xz $(mib "$(stat -c %s .device/node.xz)"), runtime.tar.xz $(mib "$(stat -c %s .device/runtime.tar.xz)"), .gl $(mib "$gl"), working tree $(mib "$tree"): total $(mib "$total") of 64 MiB"
if ((total > LIMIT - 1024 * 1024)); then
  echo "pack.sh: over the carry limit (keep 1 MiB spare): shrink the working tree or the runtime" >&2
  exit 1
fi
