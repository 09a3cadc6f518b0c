#!/usr/bin/env bash
# Provides a real nginx >= 1.27.3 (the one with `server host:port resolve` in an `upstream`) for
# tests/real: a Debian forky root made by `debootstrap --variant=minbase` with Debian's nginx, its
# path printed on the last line of output. Tests run `<root>/usr/sbin/nginx` through the root's own
# dynamic loader and libraries (the `<root>/run-nginx` wrapper this script writes), so the tests
# need no chroot and no root.
#
#   1. If NGINX_FORKY_ROOT names a root whose nginx runs, it is used as it is.
#   2. Otherwise the root is DEST_DIR (first argument, default ~/.cache/nginx-forky/root). When its
#      nginx already runs, nothing is done. Otherwise it is built: about 1-3 minutes, once; needs
#      root or sudo (debootstrap) and reaches only Debian's archive (deb.debian.org).
#
# Usage: tools/nginx-forky.sh [DEST_DIR]
set -euo pipefail

wrapper() {  # <root>/run-nginx: the root's nginx through the root's own loader and libraries
    cat > "$1/run-nginx" <<'SH'
#!/bin/sh
root=$(dirname "$(readlink -f "$0")")
lib=$root/usr/lib/x86_64-linux-gnu
exec "$lib/ld-linux-x86-64.so.2" --library-path "$lib" "$root/usr/sbin/nginx" "$@"
SH
    chmod 755 "$1/run-nginx"
}
runs() {  # the root's nginx starts and prints its version
    [ -x "$1/usr/sbin/nginx" ] && [ -x "$1/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2" ] \
        || return 1
    [ -x "$1/run-nginx" ] || wrapper "$1"
    "$1/run-nginx" -v >/dev/null 2>&1
}

if [ -n "${NGINX_FORKY_ROOT:-}" ]; then
    if runs "$NGINX_FORKY_ROOT"; then echo "$NGINX_FORKY_ROOT"; exit 0; fi
    echo "NGINX_FORKY_ROOT=$NGINX_FORKY_ROOT has no nginx that runs; using the cache" >&2
fi
dest=${1:-$HOME/.cache/nginx-forky/root}
if runs "$dest"; then echo "$dest"; exit 0; fi

sudo=()
if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "building the forky root needs root or sudo" >&2; exit 1; }
    sudo=(sudo)
fi
export DEBIAN_FRONTEND=noninteractive
if ! command -v debootstrap >/dev/null; then
    "${sudo[@]}" apt-get update -qq >/dev/null
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
fi
echo "building a Debian forky root with nginx into $dest (a few minutes, once)" >&2
# Built next to the destination and moved into place only when complete, so an interrupted build
# never leaves a half root that looks usable.
parent=$(dirname "$dest")
mkdir -p "$parent"
work=$(mktemp -d "$parent/build.XXXXXX")
trap '"${sudo[@]}" rm -rf "$work"' EXIT
# bookworm's debootstrap has no "forky" script; forky (testing) bootstraps like sid.
script=/usr/share/debootstrap/scripts/sid
"${sudo[@]}" debootstrap --variant=minbase --include=nginx \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    forky "$work/root" http://deb.debian.org/debian "$script" >"$work.log" 2>&1 \
    || { tail -30 "$work.log" >&2; exit 1; }
"${sudo[@]}" rm -rf "$work/root/var/cache/apt/archives/"*.deb
runs "$work/root" || { echo "the forky root's nginx does not run" >&2; exit 1; }
rm -rf "$dest" "$work.log"
mv "$work/root" "$dest"
echo "$dest"
