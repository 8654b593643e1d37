# The whole daemon on a real kernel: the cashier types 28.65 on a USB
# keypad and a USB HID scanner reads a WeChat code, both virtual devices
# made through /dev/uinput; the gateway simulator runs in the guest. The
# sale must end PAID in the journal and in the simulator's log.
set -e
export HOME=/tmp
. /lib.sh
start_sim
{ gateway_toml 200ms; cat <<TOML
[terminal]
# A busybox guest runs no time daemon: its kernel clock stays "unsynchronised".
require_clock_sync = false
id = "VM"
result_time = "1s"
[scanner]
driver = "evdev"
name = "scanpay fake scanner"
[keypad]
name = "scanpay keypad"
[display]
driver = "console"
[journal]
path = "/tmp/journal.db"
[log]
format = "console"
TOML
} > /tmp/scanpay.toml
start_daemon
# The keypad, like the scanner, waits 6 s for the daemon to find it.
/scanpay/fakescanner --uinput --numpad --name "scanpay keypad" --terminator kpenter --settle 6s --hold 500ms 2865
sleep 1
scan 134567890123456789
sleep 3
/scanpay/scanpay orders --config /tmp/scanpay.toml --format json > /tmp/orders.json
kill -TERM $daemon
wait $daemon || true
echo "--- daemon log"
grep -E "keyboard opened|amount pending|order sent|sale finished" /tmp/daemon.log || true
echo "--- display"
tail -n 8 /tmp/daemon.out
echo "--- orders"
cat /tmp/orders.json
grep -q '"state": "PAID"' /tmp/orders.json
grep -q '"amount": 2865' /tmp/orders.json
grep -q '"source": "keypad"' /tmp/orders.json
! grep -q 134567890123456789 /tmp/daemon.log /tmp/sim.log
