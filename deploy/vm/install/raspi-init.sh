#!/bin/busybox sh
# /init of the raspi3b smoke boot (busybox initramfs, no systemd): Debian's
# arm64 kernel on QEMU's Raspberry Pi 3 model. scanpay's arm64 binary runs
# the lane with the simulator in the guest; the scanner is QEMU's USB
# keyboard (the host types the code with the monitor's sendkey), the
# register is on the USB serial adapter /dev/ttyUSB0 (FTDI), driven from
# the host. Progress goes to the console as SCANPAY-RASPI lines.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs tmpfs /tmp
ifconfig lo 127.0.0.1 up
export HOME=/tmp
for m in $(cat /modules/order); do insmod "/modules/$m" || echo "insmod $m failed"; done
say() { echo "SCANPAY-RASPI: $*"; }
finish() { say "$1"; sync; poweroff -f; }
say "kernel $(uname -r) on $(tr -d '\0' < /proc/device-tree/model)"

i=0
until [ -e /dev/ttyUSB0 ] && grep -q 'QEMU USB Keyboard' /proc/bus/input/devices; do
  i=$((i + 1))
  if [ $i -gt 240 ]; then
    dmesg | grep -iE 'usb|dwc|hid|ftdi|input' | tail -n 30
    finish "FAIL: no USB keyboard or /dev/ttyUSB0"
  fi
  sleep 0.5
done
grep -E '^N: Name' /proc/bus/input/devices

printf 'e2eK3yDoNotLog7Q4M91xz\n' > /tmp/key
chmod 600 /tmp/key
/scanpay/iotpaysim --listen 127.0.0.1:8088 --mch-id 10000576 --key-file /tmp/key > /tmp/sim.log 2>&1 &
cat > /tmp/scanpay.toml <<'TOML'
[terminal]
id = "PI3"
result_time = "2s"
# QEMU's Pi, like a real one, has no clock battery, and this guest no
# network to set the clock from: the one boot that cannot sync.
require_clock_sync = false
[gateway]
url = "http://127.0.0.1:8088"
mch_id = "10000576"
job_no = "cashier"
key_file = "/tmp/key"
poll_interval = "1s"
[scanner]
driver = "evdev"
name = "QEMU QEMU USB Keyboard"
# The host types through QEMU's monitor, a key every few hundred ms.
idle_timeout = "3s"
[ecr]
device = "/dev/ttyUSB0"
pos_number = "01"
[display]
driver = "console"
[journal]
path = "/tmp/journal.db"
[log]
format = "console"
TOML
/scanpay/scanpay run --config /tmp/scanpay.toml > /tmp/display.out 2> /tmp/daemon.log &
i=0
until grep -q 'keyboard opened' /tmp/daemon.log && grep -q 'ecr.*device ready' /tmp/daemon.log; do
  i=$((i + 1)); [ $i -le 240 ] || { tail -n 20 /tmp/daemon.log; finish "FAIL: scanpay did not open its devices"; }
  sleep 0.5
done
say "READY"

i=0
until /scanpay/scanpay orders --config /tmp/scanpay.toml --state PAID --format json 2>/dev/null | grep -q '"amount": 1500'; do
  i=$((i + 1)); [ $i -le 600 ] || { tail -n 30 /tmp/daemon.log; finish "FAIL: no paid order"; }
  sleep 0.5
done
/scanpay/scanpay orders --config /tmp/scanpay.toml
echo "--- display"
tail -n 8 /tmp/display.out
echo "--- log"
grep -E 'keyboard opened|amount pending|order sent|sale finished|ECR result' /tmp/daemon.log
if grep -q '134567890123456789' /tmp/daemon.log /tmp/sim.log /tmp/display.out; then finish "FAIL: a full payment code in a log"; fi
finish "PASS"
