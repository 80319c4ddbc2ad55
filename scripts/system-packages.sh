#!/usr/bin/env bash
# Debian/Ubuntu packages reviewkit uses beside its Python ones, installed where we can
# (root with apt-get: a RunPod pod, CI); elsewhere one line says what to install.
#   scripts/system-packages.sh run    tcmalloc (vLLM's CPU engine runs 20-30 % faster with it)
#   scripts/system-packages.sh test   + Chromium and CJK fonts for the browser test
set -u
packages="libtcmalloc-minimal4"
[ "${1:-run}" = test ] && packages="$packages chromium fonts-noto-cjk"
missing=""
for p in $packages; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  echo "installing system packages:$missing"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
else
  echo "reviewkit: please install the system packages:$missing (e.g. sudo apt-get install$missing);"
  echo "  tcmalloc only speeds vLLM's CPU engine up; chromium and fonts-noto-cjk are for the browser test."
  [ "${1:-run}" = test ] && exit 1
fi
exit 0
