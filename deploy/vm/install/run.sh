#!/usr/bin/env bash
# The install suite (make test-install, after make dist): the .deb installed
# with apt on Debian 12 under systemd, booted in QEMU (software emulation),
# amd64 and arm64 (-M virt), and a busybox smoke boot on -M raspi3b.
#
#   deploy/vm/install/run.sh             every part
#   SCANPAY_INSTALL_ONLY=amd64 …         one part: amd64, arm64 or raspi3b
#
# Images are cached (image.sh; $SCANPAY_VM_CACHE, default deploy/vm/work);
# each run's scratch (disks, consoles, display captures) is in
# deploy/vm/work/install. Needs root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../../.." && pwd)
dist=${DIST:-$root/dist}
work=${SCANPAY_INSTALL_WORK:-$root/deploy/vm/work/install}
only=${SCANPAY_INSTALL_ONLY:-amd64 arm64 raspi3b}
t0=$SECONDS
say() { echo "install: $*"; }
[ "$(id -u)" = 0 ] || { echo "install: needs root (images, mkfs, binfmt)" >&2; exit 1; }

need=()
command -v qemu-system-x86_64 >/dev/null || need+=(qemu-system-x86)
command -v qemu-system-aarch64 >/dev/null || need+=(qemu-system-arm)
command -v qemu-img >/dev/null || need+=(qemu-utils)
command -v mkfs.ext4 >/dev/null || need+=(e2fsprogs)
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

deb_amd64=$(ls "$dist"/scanpay_*_amd64.deb 2>/dev/null | head -1)
deb_arm64=$(ls "$dist"/scanpay_*_arm64.deb 2>/dev/null | head -1)
[ -n "$deb_amd64" ] && [ -n "$deb_arm64" ] || { echo "install: no packages in $dist: run make dist first" >&2; exit 1; }
version=$(dpkg-deb --field "$deb_amd64" Version)
rm -rf "$work" && mkdir -p "$work"

# The images, both architectures at once (arm64's is built through
# qemu-user-static).
arches=()
case " $only " in *" amd64 "*) arches+=(amd64) ;; esac
case " $only " in *" arm64 "*|*" raspi3b "*) arches+=(arm64) ;; esac
declare -A image
for a in "${arches[@]}"; do
  "$here/image.sh" "$a" > "$work/image-$a.out" 2> >(sed "s/^/  /" >&2) &
done
wait
for a in "${arches[@]}"; do
  image[$a]=$(tail -n 1 "$work/image-$a.out")
  [ -f "${image[$a]}/done" ] || { echo "install: no $a image" >&2; exit 1; }
done
say "images ready after $((SECONDS - t0)) s"

# The payload disks: the packages, the simulator, the agent.
payload() {
  local a=$1 dir="$work/payload-$1"
  mkdir -p "$dir"
  cp "$here/payload/agent.sh" "$here/payload/lib.sh" "$dir/"
  cp "$(ls "$dist"/scanpay_*_"$a".deb)" "$dir/"
  (cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=$a go build -trimpath -o "$dir/iotpaysim" ./cmd/iotpaysim)
  if [ "$a" = amd64 ]; then
    # A newer build of the same tree, for the upgrade.
    DEB_ARCHES=amd64 "$root/deploy/deb/build.sh" "$dir/next" "$version+next" >/dev/null
  fi
  mkfs.ext4 -q -F -L e2epayload -d "$dir" "$work/payload-$a.img" 256M >/dev/null
}
env_args=()
for a in amd64 arm64; do
  case " $only " in *" $a "*) ;; *) continue ;; esac
  payload "$a"
  up=${a^^}
  env_args+=("SCANPAY_INSTALL_IMAGE_$up=${image[$a]}" "SCANPAY_INSTALL_PAYLOAD_$up=$work/payload-$a.img")
done
case " $only " in *" raspi3b "*)
  # The raspi3b smoke boot's initramfs: the Pi's modules and busybox from
  # the arm64 image, scanpay from the arm64 package, the simulator.
  ird="$work/raspi-initrd"
  mkdir -p "$ird"/{bin,dev,proc,sys,tmp,scanpay,modules}
  cp "${image[arm64]}/raspi/busybox" "$ird/bin/busybox"
  cp "${image[arm64]}"/raspi/modules/* "$ird/modules/"
  dpkg-deb -x "$deb_arm64" "$work/raspi-deb"
  cp "$work/raspi-deb/usr/bin/scanpay" "$ird/scanpay/"
  (cd "$root" && CGO_ENABLED=0 GOOS=linux GOARCH=arm64 go build -trimpath -o "$ird/scanpay/iotpaysim" ./cmd/iotpaysim)
  install -m 0755 "$here/raspi-init.sh" "$ird/init"
  (cd "$ird" && find . | /bin/busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$work/raspi-initrd.gz"
  env_args+=("SCANPAY_INSTALL_RASPI_INITRD=$work/raspi-initrd.gz")
  case " ${env_args[*]} " in *SCANPAY_INSTALL_IMAGE_ARM64=*) ;; *) env_args+=("SCANPAY_INSTALL_IMAGE_ARM64=${image[arm64]}") ;; esac
  ;;
esac
say "payloads ready after $((SECONDS - t0)) s"

runs=()
case " $only " in *" amd64 "*) runs+=(TestInstallAMD64) ;; esac
case " $only " in *" arm64 "*) runs+=(TestInstallARM64) ;; esac
case " $only " in *" raspi3b "*) runs+=(TestRaspi3bSmoke) ;; esac
pattern="^($(IFS='|'; echo "${runs[*]}"))\$"
say "go test -run '$pattern' (log: $work/go-test.log)"
set +e
(cd "$root" && env SCANPAY_INSTALL_TEST=1 SCANPAY_INSTALL_WORK="$work" "${env_args[@]}" \
  go test -count=1 -v -timeout 50m -run "$pattern" ./deploy/vm/install) > "$work/go-test.log" 2>&1
rc=$?
set -e
# The outline: scenario lines, failures and their output.
grep -E '^(=== RUN|--- |PASS|FAIL|ok )|scenario |booted in|NOTE|exposure|watchdog:|upgrade |after apt|journal:|raspi3b:' "$work/go-test.log" | grep -v '^=== RUN' || true
if [ $rc -ne 0 ]; then
  echo "install: FAIL; the whole log follows"
  cat "$work/go-test.log"
  exit 1
fi
say "PASS in $((SECONDS - t0)) s"
