#!/usr/bin/env bash
# Builds scanpay .deb packages: deploy/deb/build.sh OUTDIR VERSION
# One package per Debian architecture: amd64, arm64, armhf (DEB_ARCHES, a
# space-separated subset, builds fewer). armhf carries the GOARM=6 build,
# which runs on every Raspberry Pi (Pi OS armhf is ARMv6).
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
out=${1:?outdir}
version=${2:?version}
mkdir -p "$out"
for target in amd64:amd64: arm64:arm64: armhf:arm:6; do
  IFS=: read -r debarch goarch goarm <<<"$target"
  case " ${DEB_ARCHES:-amd64 arm64 armhf} " in *" $debarch "*) ;; *) continue ;; esac
  stage=$(mktemp -d)
  trap 'rm -rf "$stage"' EXIT
  install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/usr/lib/scanpay" "$stage/lib/systemd/system" \
    "$stage/usr/lib/sysusers.d" "$stage/usr/lib/tmpfiles.d" "$stage/lib/udev/rules.d" "$stage/etc/scanpay" \
    "$stage/usr/share/doc/scanpay"
  # scanpay is the lane's build (-tags nohq: no NATS server or PostgreSQL
  # client in the binary a checkout Pi runs); scanpay-hq is head office's.
  for cmd in scanpay scanpay-hq fakeecr fakescanner; do
    dest="$stage/usr/lib/scanpay/$cmd" src="./cmd/$cmd" tags=
    case $cmd in
      scanpay) dest="$stage/usr/bin/scanpay" tags=nohq ;;
      scanpay-hq) dest="$stage/usr/bin/scanpay-hq" src=./cmd/scanpay ;;
    esac
    (cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$goarch GOARM=$goarm go build -trimpath -tags "$tags" \
      -ldflags "-s -w -X main.version=$version" -o "$dest" "$src")
  done
  install -m 0644 "$root/systemd/scanpay.service" "$stage/lib/systemd/system/scanpay.service"
  install -m 0644 "$root/systemd/scanpay-hq.service" "$stage/lib/systemd/system/scanpay-hq.service"
  install -m 0644 "$root/systemd/scanpay-hq.sysusers" "$stage/usr/lib/sysusers.d/scanpay-hq.conf"
  install -m 0644 "$root/deploy/hq.toml" "$stage/etc/scanpay/hq.toml"
  install -m 0644 "$root/systemd/scanpay.sysusers" "$stage/usr/lib/sysusers.d/scanpay.conf"
  install -m 0644 "$root/systemd/scanpay.tmpfiles" "$stage/usr/lib/tmpfiles.d/scanpay.conf"
  install -m 0644 "$root/deploy/udev/70-scanpay.rules" "$stage/lib/udev/rules.d/70-scanpay.rules"
  install -m 0644 "$root/deploy/scanpay.toml" "$stage/etc/scanpay/scanpay.toml"
  install -m 0644 "$root/README.md" "$stage/usr/share/doc/scanpay/README.md"
  printf 'scanpay\nSource: scanpay\nLicense: proprietary; see the shop agreement.\n' > "$stage/usr/share/doc/scanpay/copyright"
  size=$(du -sk "$stage" | cut -f1)
  cat > "$stage/DEBIAN/control" <<CONTROL
Package: scanpay
Version: $version
Architecture: $debarch
Maintainer: scanpay developers <dev@scanpay.invalid>
Installed-Size: $size
Depends: adduser
Recommends: systemd
Section: misc
Priority: optional
Homepage: https://github.com/scanpay/scanpay
Description: payment terminal for WeChat Pay, Alipay and UnionPay codes
 scanpay runs one checkout lane: the amount comes from a USB keypad or the
 cash register (Concert protocol), a barcode scanner reads the customer's
 payment code, and the IOTPay order is followed to its final status, shown
 on a customer display and reported to the register. Every order is
 journaled before it is sent. The same package carries head office
 (scanpay-hq, scanpay-hq.service, not enabled): every lane's orders and
 health through NATS JetStream into PostgreSQL.
CONTROL
  printf '/etc/scanpay/scanpay.toml\n/etc/scanpay/hq.toml\n' > "$stage/DEBIAN/conffiles"
  install -m 0755 "$here/postinst" "$here/prerm" "$here/postrm" "$stage/DEBIAN/"
  deb="$out/scanpay_${version}_${debarch}.deb"
  dpkg-deb --root-owner-group --build -Zxz "$stage" "$deb" >/dev/null
  echo "built $deb ($(du -k "$deb" | cut -f1) KiB)"
  rm -rf "$stage"
  trap - EXIT
done
