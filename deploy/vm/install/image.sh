#!/usr/bin/env bash
# Builds, or finds in the cache, the Debian 12 image the install suite boots:
#
#   deploy/vm/install/image.sh ARCH        (ARCH: amd64 or arm64)
#
# prints the image's directory as its last line. The directory holds
#   root.img    the root file system (ext4, raw, sparse): mmdebstrap's
#               Debian 12 with systemd and udev (packages.txt), Debian's
#               kernel modules, and the rig's guest/ files;
#   vmlinuz     Debian's kernel (linux-image-ARCH as of the build);
#   initrd.gz   a small busybox initramfs that loads the virtio and ext4
#               modules and switches to /dev/vda with systemd as PID 1;
#   raspi/      (arm64) the Pi 3's device tree and the USB modules, for the
#               busybox smoke boot on QEMU's raspi3b.
#
# Cache: $SCANPAY_VM_CACHE, default deploy/vm/work. The directory is keyed
# by the architecture, the package list, guest/ and this script, so a clean
# clone pointed at a kept cache (CI does this) skips the ~4 min (amd64) or
# ~15 min (arm64, through qemu-user-static) build. Older images of the same
# architecture are removed when a new one is built.
#
# Needs root (mmdebstrap in root mode, ownership in the image), mmdebstrap,
# qemu-user-static and binfmt_misc for arm64, e2fsprogs, kmod, busybox; as
# root it installs the packages itself.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
arch=${1:?usage: image.sh amd64|arm64}
suite=bookworm
mirror=${SCANPAY_VM_MIRROR:-http://deb.debian.org/debian}
security=${SCANPAY_VM_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=${SCANPAY_VM_CACHE:-$root/deploy/vm/work}
case "$arch" in
  amd64) karch=amd64; qemu_binfmt= ;;
  arm64) karch=arm64; qemu_binfmt=qemu-aarch64 ;;
  *) echo "image: unknown architecture $arch" >&2; exit 2 ;;
esac
log() { echo "image $arch: $*" >&2; }

key=$( { echo "$suite $arch $mirror"; cat "$here/packages.txt" "$0"; for f in "$here"/guest/*; do echo "$f"; cat "$f"; done; } \
  | sha256sum | cut -c1-16)
out="$cache/debian-$arch-$key"
if [ -f "$out/done" ]; then
  log "cached: $out"
  echo "$out"
  exit 0
fi

[ "$(id -u)" = 0 ] || { echo "image: building the image needs root (mmdebstrap, file ownership)" >&2; exit 1; }
need=()
command -v mmdebstrap >/dev/null || need+=(mmdebstrap)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
command -v depmod >/dev/null || need+=(kmod)
[ -x /bin/busybox ] || need+=(busybox-static)
if [ -n "$qemu_binfmt" ]; then
  command -v "$qemu_binfmt-static" >/dev/null || need+=(qemu-user-static)
fi
if [ ${#need[@]} -gt 0 ]; then
  log "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -n "$qemu_binfmt" ] && [ ! -e "/proc/sys/fs/binfmt_misc/$qemu_binfmt" ]; then
  # Foreign maintainer scripts run through qemu-user-static. The F flag in
  # Debian's registration opens the interpreter now, so it works in chroots.
  [ -e /proc/sys/fs/binfmt_misc/register ] || mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc
  /usr/lib/systemd/systemd-binfmt "$qemu_binfmt.conf"
  [ -e "/proc/sys/fs/binfmt_misc/$qemu_binfmt" ] || { echo "image: cannot register $qemu_binfmt with binfmt_misc" >&2; exit 1; }
fi

mkdir -p "$cache"
tmp=$(mktemp -d "$cache/build-$arch.XXXXXX")
trap 'rm -rf "$tmp"' EXIT
rootfs="$tmp/root"
packages=$(grep -v '^#' "$here/packages.txt" | grep . | paste -sd, -)
log "mmdebstrap $suite ($packages)"
start=$SECONDS
# The kernel is unpacked (dpkg -x) rather than installed: installing it
# would run update-initramfs, minutes under qemu-user, for an initramfs
# the rig replaces with its own.
kernel_hook='set -e; cd "$1/tmp"
  pkg=$(APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-cache depends linux-image-'"$karch"' | awk "/Depends: linux-image-[0-9]/{print \$2; exit}")
  [ -n "$pkg" ] || { echo "no kernel package behind linux-image-'"$karch"'" >&2; exit 1; }
  APT_CONFIG="$MMDEBSTRAP_APT_CONFIG" apt-get -q -o APT::Sandbox::User=root download "$pkg" >/dev/null
  # Into a folder first: dpkg -x would replace the /lib -> usr/lib link.
  mkdir "$1/tmp/k" && dpkg -x "$1"/tmp/linux-image-*.deb "$1/tmp/k"
  cp -a "$1/tmp/k/boot/." "$1/boot/"
  [ ! -d "$1/tmp/k/lib" ] || cp -a "$1/tmp/k/lib/." "$1/usr/lib/"
  [ ! -d "$1/tmp/k/usr" ] || cp -a "$1/tmp/k/usr/." "$1/usr/"
  rm -rf "$1"/tmp/linux-image-*.deb "$1/tmp/k"'
# A mirror caught mid-sync fails the index download ("File has unexpected
# size"): try again a little later rather than fail the suite.
for try in 1 2 3; do
  rm -rf "$rootfs"
  if mmdebstrap --quiet --mode=root --variant=apt --arch="$arch" --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/locale/*' \
    --customize-hook="$kernel_hook" \
    "$suite" "$rootfs" \
    "deb $mirror $suite main" "deb $mirror $suite-updates main" "deb $security $suite-security main"; then
    break
  fi
  [ $try -lt 3 ] || { echo "image: mmdebstrap failed 3 times" >&2; exit 1; }
  log "mmdebstrap failed; trying again in 60 s"
  sleep 60
done
log "mmdebstrap took $((SECONDS - start)) s"

kver=$(ls "$rootfs/lib/modules" | head -1)
[ -n "$kver" ] && [ -f "$rootfs/boot/vmlinuz-$kver" ] || { echo "image: no kernel in the root file system" >&2; exit 1; }
depmod -b "$rootfs" "$kver"

# The rig's guest configuration.
g="$here/guest"
install -m 0644 "$g/fstab" "$rootfs/etc/fstab"
mkdir -p "$rootfs/mnt/payload" "$rootfs/etc/systemd/network" "$rootfs/etc/systemd/timesyncd.conf.d" "$rootfs/var/log/journal"
install -m 0644 "$g/10-e2e.network" "$rootfs/etc/systemd/network/10-e2e.network"
install -m 0644 "$g/timesyncd.conf" "$rootfs/etc/systemd/timesyncd.conf.d/10-e2e.conf"
install -m 0644 "$g/e2e-agent.service" "$rootfs/etc/systemd/system/e2e-agent.service"
echo lane > "$rootfs/etc/hostname"
printf '127.0.0.1 localhost\n127.0.1.1 lane\n' > "$rootfs/etc/hosts"
# A fixed machine id: every boot of a copy is the same machine, and the
# journal keeps one directory across boots.
echo "$key$key" > "$rootfs/etc/machine-id"
systemctl --root="$rootfs" enable systemd-networkd.service systemd-timesyncd.service e2e-agent.service >/dev/null 2>&1
# Nothing on the rig may reach the network: no apt timers.
systemctl --root="$rootfs" mask apt-daily.timer apt-daily-upgrade.timer >/dev/null 2>&1
rm -f "$rootfs/var/lib/systemd/timesync/clock"

# The kernel, and a busybox initramfs for the virtio root.
cp "$rootfs/boot/vmlinuz-$kver" "$tmp/vmlinuz"
echo "$kver" > "$tmp/kver"
mods="$rootfs/lib/modules/$kver"
# modules NAME... copies the named modules and their dependencies into
# DIR (decompressed), writing their load order to DIR/order.
modules() {
  local dir=$1; shift
  mkdir -p "$dir"
  : > "$dir/order"
  local -A seen=()
  add() {
    local name=$1 path deps d
    [ -z "${seen[$name]:-}" ] || return 0
    seen[$name]=1
    path=$(awk -F: -v n="$name" '{f=$1; sub(/.*\//, "", f); sub(/\.ko(\.[a-z]+)?$/, "", f); gsub(/-/, "_", f); if (f == n) {print $1; exit}}' "$mods/modules.dep")
    if [ -z "$path" ]; then
      if grep -q "/$name.ko" "$mods/modules.builtin" 2>/dev/null || grep -q "/${name//_/-}.ko" "$mods/modules.builtin" 2>/dev/null; then return 0; fi
      echo "image: module $name not found for $kver" >&2; return 1
    fi
    deps=$(awk -F': ' -v p="$path" '$1 == p {print $2}' "$mods/modules.dep")
    for d in $deps; do
      d=${d##*/}; d=${d%%.ko*}; add "${d//-/_}"
    done
    local file=${path##*/}; file=${file%%.ko*}.ko
    case "$path" in
      *.xz) xz -dc "$mods/$path" > "$dir/$file" ;;
      *.zst) zstd -qdc "$mods/$path" > "$dir/$file" ;;
      *) cp "$mods/$path" "$dir/$file" ;;
    esac
    echo "$file" >> "$dir/order"
  }
  local m
  for m in "$@"; do add "$m"; done
}
ird="$tmp/initrd"
mkdir -p "$ird"/{bin,dev,proc,sys,newroot}
cp "$rootfs/bin/busybox" "$ird/bin/busybox"
modules "$ird/modules" crc32c_generic ext4 virtio_pci virtio_blk
cat > "$ird/init" <<'INIT'
#!/bin/busybox sh
# Loads what the root disk needs and hands over to systemd on /dev/vda.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules/order); do insmod "/modules/$m" 2>/dev/null || echo "initrd: insmod $m failed"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
mount -t ext4 -o rw /dev/vda /newroot || { echo "initrd: cannot mount /dev/vda"; sleep 5; poweroff -f; }
mount --move /dev /newroot/dev
mount --move /sys /newroot/sys
mount --move /proc /newroot/proc
exec switch_root /newroot /sbin/init
INIT
chmod +x "$ird/init"
(cd "$ird" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$tmp/initrd.gz"
rm -rf "$ird"

if [ "$arch" = arm64 ]; then
  # The Pi 3 smoke boot: its device tree, and the USB host, keyboard and
  # USB-serial modules for a busybox initramfs assembled per run.
  mkdir -p "$tmp/raspi"
  cp "$rootfs/usr/lib/linux-image-$kver/broadcom/bcm2837-rpi-3-b.dtb" "$tmp/raspi/"
  modules "$tmp/raspi/modules" evdev uinput dwc2 usbhid hid_generic usbserial ftdi_sio
  cp "$rootfs/bin/busybox" "$tmp/raspi/busybox"
fi

log "writing root.img"
# 3 GiB, sparse: the image itself takes what the files take.
mkfs.ext4 -q -F -L root -d "$rootfs" "$tmp/root.img" 3G >/dev/null
rm -rf "$rootfs"
touch "$tmp/done"
for old in "$cache"/debian-"$arch"-*; do [ -e "$old" ] && rm -rf "$old"; done
mv "$tmp" "$out"
trap - EXIT
log "built $out in $((SECONDS - start)) s ($(du -sh "$out" | cut -f1))"
echo "$out"
