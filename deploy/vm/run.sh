#!/usr/bin/env bash
# Boots a stock Debian kernel in QEMU (software emulation) with a busybox
# initramfs holding scanpay's static test binaries, runs one scenario from
# scenarios/, and prints its PASS/FAIL line. The real kernel gives real
# evdev/uinput devices, which development and CI machines lack.
#
#   deploy/vm/run.sh [scenario]      (default: scanner)
#
# Needs qemu-system-x86_64, busybox (static) and Debian's archive; as root it
# installs the first two itself. Kernel packages are cached in deploy/vm/work.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
scenario=${1:-scanner}
work="$here/work"
mkdir -p "$work"

need() { command -v "$1" >/dev/null 2>&1; }
if ! need qemu-system-x86_64 || [ ! -x /bin/busybox ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "vm: installing qemu-system-x86 and busybox-static"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq qemu-system-x86 busybox-static >/dev/null
  else
    echo "vm: need qemu-system-x86_64 and busybox-static (apt-get install qemu-system-x86 busybox-static)" >&2
    exit 1
  fi
fi

# 1. The kernel: the package linux-image-amd64 currently depends on.
kdir="$work/kernel"
if [ ! -d "$kdir/boot" ]; then
  if ! apt-cache show linux-image-amd64 >/dev/null 2>&1; then apt-get update -qq; fi
  pkg=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
  [ -n "$pkg" ] || { echo "vm: cannot find the kernel package behind linux-image-amd64" >&2; exit 1; }
  echo "vm: fetching $pkg"
  (cd "$work" && rm -f linux-image-*.deb && apt-get -o APT::Sandbox::User=root download "$pkg" >/dev/null)
  rm -rf "$kdir.tmp" && dpkg -x "$work"/linux-image-*.deb "$kdir.tmp" && mv "$kdir.tmp" "$kdir"
fi
vmlinuz=$(ls "$kdir"/boot/vmlinuz-* | head -1)
kver=$(basename "$vmlinuz" | sed 's/^vmlinuz-//')
mods="$kdir/lib/modules/$kver/kernel"

# 2. The initramfs.
ird="$work/initramfs-$scenario"
rm -rf "$ird" && mkdir -p "$ird"/{bin,sbin,proc,sys,dev,tmp,mnt,modules,scanpay}
cp /bin/busybox "$ird/bin/busybox"
modules="drivers/input/evdev.ko drivers/input/misc/uinput.ko"
# A scenario may need more, listed in load order in scenarios/NAME.modules.
if [ -f "$here/scenarios/$scenario.modules" ]; then
  modules="$modules $(grep -v '^#' "$here/scenarios/$scenario.modules" | tr '\n' ' ')"
fi
for m in $modules; do
  src="$mods/$m"
  basename "$m" >> "$ird/modules/order"
  if [ -f "$src.xz" ]; then xz -dc "$src.xz" > "$ird/modules/$(basename "$m")"; 
  elif [ -f "$src" ]; then cp "$src" "$ird/modules/"; 
  else echo "vm: module $m not found in $mods" >&2; exit 1; fi
done
export CGO_ENABLED=0 GOOS=linux GOARCH=amd64
(cd "$root" && go build -trimpath -o "$ird/scanpay/fakescanner" ./cmd/fakescanner)
(cd "$root" && go test -c -trimpath -o "$ird/scanpay/scanner.test" ./scanner)
if [ -f "$here/scenarios/$scenario.build" ]; then
  (cd "$root" && IRD="$ird" bash "$here/scenarios/$scenario.build")
fi
cp "$here/scenarios/$scenario.sh" "$ird/scenario.sh"
cp "$here/scenarios/lib.sh" "$ird/lib.sh"
cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ifconfig lo 127.0.0.1 up
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "insmod $m failed"; done
echo "SCANPAY-VM: scenario starting"
if sh /scenario.sh; then echo "SCANPAY-VM: PASS"; else echo "SCANPAY-VM: FAIL"; fi
poweroff -f
INIT
chmod +x "$ird/init" "$ird/scenario.sh"
(cd "$ird" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/initrd-$scenario.gz"

# 3. Boot. boot LOG [QEMU ARGS…] runs the VM to its end; a scenario with a
# host side (scenarios/NAME.host) drives several boots itself.
log="$work/console-$scenario.log"
boot() {
  local out=$1; shift
  timeout 300 qemu-system-x86_64 -accel tcg -m 512 -nographic -no-reboot -nic none \
    -kernel "$vmlinuz" -initrd "$work/initrd-$scenario.gz" "$@" > "$out" 2>&1 || true
}
show() { tr -d '\r' < "$1" | grep -E '^(=== RUN|--- |    |PASS|FAIL|ok|SCANPAY-VM|  "|ttyS1 as|result:)' | grep -v '^SCANPAY-VM: scenario' || true; }
echo "vm: booting $kver for scenario '$scenario' (log: $log)"
if [ -f "$here/scenarios/$scenario.host" ]; then
  . "$here/scenarios/$scenario.host"
else
  boot "$log" -append "console=ttyS0 quiet panic=-1"
  show "$log"
fi
if grep -q "SCANPAY-VM: PASS" "$log"; then
  echo "vm $scenario: PASS"
else
  echo "vm $scenario: FAIL (console log: $log)"
  tail -n 40 "$log"
  exit 1
fi
