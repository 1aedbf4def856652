#!/usr/bin/env bash
# The Dockerfile's base image, python:3.11-slim-bookworm, in buildah's local storage.
#
# Pulled from the registry when it can be. Where no registry is reachable (this project's CI
# machine), a STAND-IN is made: Debian bookworm (minbase) from Debian's mirror by debootstrap,
# with python3, python3-venv and ca-certificates, /usr/local/bin/python{,3} linked to
# /usr/bin/python3 as in the official image, and the host's CA bundle (pip inside the build
# reaches the package index through this network with it). It is committed under the official
# name, labelled org.rmmwatch.stand-in=true, and every message says "stand-in". It is cached in
# buildah's storage (/var/lib/containers), outside the clone, and made once.
#
# Usage: scripts/image/base.sh        (prints the base's image id)
set -euo pipefail

BASE="docker.io/library/python:3.11-slim-bookworm"
STORAGE=(--storage-driver vfs)
say() { echo "image-base: $*" >&2; }

if buildah "${STORAGE[@]}" inspect --type image "$BASE" >/dev/null 2>&1; then
    standin=$(buildah "${STORAGE[@]}" inspect --type image --format '{{index .ImageAnnotations "org.rmmwatch.stand-in"}}{{index .Docker.Config.Labels "org.rmmwatch.stand-in"}}' "$BASE" 2>/dev/null || true)
    [[ "$standin" == *true* ]] && say "using the cached STAND-IN for $BASE (not the official image)"
    buildah "${STORAGE[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE"
    exit 0
fi

if timeout 60 buildah "${STORAGE[@]}" pull --quiet "$BASE" >/dev/null 2>&1; then
    say "pulled the official $BASE"
    buildah "${STORAGE[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE"
    exit 0
fi

say "$BASE cannot be pulled (no registry reachable): making a STAND-IN with debootstrap (a few minutes, once)"
command -v debootstrap >/dev/null || { say "debootstrap is missing: apt-get install -y debootstrap"; exit 1; }
work=$(mktemp -d /var/tmp/rmmwatch-base.XXXXXX)
trap 'rm -rf "$work"' EXIT
rootfs="$work/rootfs"
debootstrap --variant=minbase --include=python3,python3-venv,ca-certificates \
    bookworm "$rootfs" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 \
    || { tail -20 "$work/debootstrap.log" >&2; say "debootstrap failed"; exit 1; }
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python"
ln -sf /usr/bin/python3 "$rootfs/usr/local/bin/python3"
cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
rm -rf "$rootfs"/var/cache/apt/archives/*.deb "$rootfs"/var/lib/apt/lists/*

ctr=$(buildah "${STORAGE[@]}" from scratch)
mnt=$(buildah "${STORAGE[@]}" mount "$ctr")
cp -a "$rootfs"/. "$mnt"/
buildah "${STORAGE[@]}" umount "$ctr" >/dev/null
buildah "${STORAGE[@]}" config \
    --env PATH=/usr/local/bin:/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env LANG=C.UTF-8 \
    --label org.rmmwatch.stand-in=true \
    --label "org.rmmwatch.stand-in.note=debootstrap bookworm minbase + python3 (Debian's 3.11), made by scripts/image/base.sh" \
    --cmd python3 "$ctr"
buildah "${STORAGE[@]}" commit --quiet --rm "$ctr" "$BASE" >/dev/null
say "made the STAND-IN $BASE ($(du -sh "$rootfs" | cut -f1) root filesystem)"
buildah "${STORAGE[@]}" inspect --type image --format '{{.FromImageID}}' "$BASE"
