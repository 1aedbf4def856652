#!/usr/bin/env bash
# make image: build the project's Dockerfile, unchanged.
#
# With `docker build` where a Docker engine answers; else with buildah (vfs storage, chroot
# isolation: no daemon, no user namespaces needed, as root). When the base cannot be pulled,
# scripts/image/base.sh makes a stand-in and says so.
#
# Usage: scripts/image/build.sh [TAG]      (default rmmwatch:<version>; prints the tag)
set -euo pipefail
cd "$(dirname "$0")/../.."

version=$(sed -n 's/^version = "\(.*\)"/\1/p' pyproject.toml | head -n 1)
tag=${1:-rmmwatch:$version}
revision=$(git rev-parse HEAD 2>/dev/null || echo unknown)
created=$(date -u +%Y-%m-%dT%H:%M:%SZ)
args=(--build-arg "VERSION=$version" --build-arg "REVISION=$revision" --build-arg "CREATED=$created" -t "$tag" .)

if command -v docker >/dev/null && docker info >/dev/null 2>&1; then
    echo "image: docker build -t $tag" >&2
    docker build "${args[@]}" >&2
else
    if ! command -v buildah >/dev/null || ! command -v debootstrap >/dev/null; then
        command -v apt-get >/dev/null || {
            echo "image: neither a Docker engine nor buildah here, and no apt-get to install buildah" >&2
            exit 1
        }
        echo "image: no Docker engine: installing buildah and debootstrap (Debian packages)" >&2
        sudo=(); [[ $(id -u) -eq 0 ]] || sudo=(sudo -n)
        export DEBIAN_FRONTEND=noninteractive
        timeout 600 "${sudo[@]}" apt-get install -y -q buildah debootstrap >/dev/null 2>&1 || {
            timeout 600 "${sudo[@]}" apt-get update -q >/dev/null 2>&1 || true
            timeout 600 "${sudo[@]}" apt-get install -y -q buildah debootstrap >&2
        }
    fi
    scripts/image/base.sh >/dev/null
    echo "image: buildah bud -t $tag (no Docker engine here)" >&2
    buildah --storage-driver vfs bud --pull=never --network host --isolation chroot --layers=false --format docker \
        --quiet "${args[@]}" >&2
    # The image this tag named before is dangling now: 300 MB each under vfs, removed.
    buildah --storage-driver vfs rmi --prune >/dev/null 2>&1 || true
fi
echo "$tag"
