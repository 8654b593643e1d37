#!/usr/bin/env bash
# Checks built packages: deploy/deb/check.sh DISTDIR
# - dpkg-deb --info/--contents of each package;
# - installs the amd64 one into a scratch root, checks the layout and the
#   conffile, edits the config, reinstalls, and checks the edit survived;
# - runs the arm64 and armhf binaries under qemu-user-static.
set -euo pipefail
dist=${1:?distdir}
fail() { echo "deb check: FAIL: $*"; exit 1; }
for deb in "$dist"/scanpay_*.deb; do
  echo "== $(basename "$deb")"
  dpkg-deb --info "$deb" | sed -n '/Package:/,/Description:/p'
  contents=$(dpkg-deb --contents "$deb")
  for f in ./usr/bin/scanpay ./usr/bin/scanpay-hq ./lib/systemd/system/scanpay.service ./usr/lib/sysusers.d/scanpay.conf \
           ./usr/lib/tmpfiles.d/scanpay.conf ./lib/udev/rules.d/70-scanpay.rules ./etc/scanpay/scanpay.toml \
           ./lib/systemd/system/scanpay-hq.service ./usr/lib/sysusers.d/scanpay-hq.conf ./etc/scanpay/hq.toml; do
    grep -q " $f\$" <<<"$contents" || fail "$deb lacks $f"
  done
  [ "$(dpkg-deb --field "$deb" Package)" = scanpay ] || fail "package name"
  dpkg-deb --info "$deb" conffiles | grep -qx /etc/scanpay/scanpay.toml || fail "config is not a conffile"
  dpkg-deb --info "$deb" conffiles | grep -qx /etc/scanpay/hq.toml || fail "hq config is not a conffile"
done

amd=$(ls "$dist"/scanpay_*_amd64.deb)
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/var/lib/dpkg/info" "$root/var/lib/dpkg/updates"
touch "$root/var/lib/dpkg/status"
install_deb() { dpkg --root="$root" --force-script-chrootless --force-depends --force-confold -i "$1" >/dev/null; }
install_deb "$amd"
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Status} ${Version}\n' scanpay | grep -q "install ok installed" || fail "not installed"
for f in usr/bin/scanpay lib/systemd/system/scanpay.service etc/scanpay/scanpay.toml; do
  [ -e "$root/$f" ] || fail "$f not installed"
done
dpkg-query --admindir="$root/var/lib/dpkg" -W -f='${Conffiles}\n' scanpay | grep -q /etc/scanpay/scanpay.toml || fail "conffile not registered"
echo 'id = "EDITED"' >> "$root/etc/scanpay/scanpay.toml"
install_deb "$amd"
grep -q 'id = "EDITED"' "$root/etc/scanpay/scanpay.toml" || fail "reinstalling overwrote an edited config"
"$root/usr/bin/scanpay" version
# The installed head-office example is valid as shipped up to its database.
# (A bad --format is refused only after the config parsed.)
out=$("$root/usr/bin/scanpay-hq" report --config "$root/etc/scanpay/hq.toml" --format xml 2>&1 || true)
grep -q 'format "xml"' <<<"$out" || fail "hq.toml as installed does not parse: $out"
# The lane's binary is the lean build: head office is not in it.
# (It refuses with exit 2: read its answer without tripping pipefail.)
out=$("$root/usr/bin/scanpay" hq report 2>&1 || true)
grep -q 'scanpay-hq' <<<"$out" || fail "the lane's scanpay carries head office: $out"
echo "scratch-root install: layout, conffile and kept edit OK"

# The arm binaries start under qemu-user.
cfgdir=$(mktemp -d)
printf 'TESTKEY1234567890\n' > "$cfgdir/key"; chmod 600 "$cfgdir/key"; touch "$cfgdir/scanner"
cat > "$cfgdir/scanpay.toml" <<TOML
[gateway]
mch_id = "1"
job_no = "j"
key_file = "$cfgdir/key"
[scanner]
driver = "serial"
device = "$cfgdir/scanner"
[journal]
path = "$cfgdir/journal.db"
TOML
for pair in arm64:qemu-aarch64-static armhf:qemu-arm-static; do
  arch=${pair%%:*}; emu=${pair##*:}
  deb=$(ls "$dist"/scanpay_*_"$arch".deb)
  x=$(mktemp -d)
  dpkg-deb -x "$deb" "$x"
  "$emu" "$x/usr/bin/scanpay" version
  "$emu" "$x/usr/bin/scanpay" check-config --config "$cfgdir/scanpay.toml" >/dev/null || fail "$arch check-config"
  echo "$arch: scanpay version and check-config OK under $emu"
  rm -rf "$x"
done
rm -rf "$cfgdir"
echo "deb check: PASS"
