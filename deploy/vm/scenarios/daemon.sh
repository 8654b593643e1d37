# The whole daemon on a real kernel: the cashier types 28.65 on a USB
# keypad and a USB HID scanner reads a WeChat code, both virtual devices
# made through /dev/uinput; the gateway simulator runs in the guest. The
# sale must end PAID in the journal and in the simulator's log.
set -e
export HOME=/tmp
printf 'TESTKEY1234567890\n' > /tmp/key
chmod 600 /tmp/key
/scanpay/iotpaysim --listen 127.0.0.1:8088 --mch-id 10000576 --key-file /tmp/key > /tmp/sim.log 2>&1 &
cat > /tmp/scanpay.toml <<TOML
[terminal]
id = "VM"
result_time = "1s"
[gateway]
url = "http://127.0.0.1:8088"
mch_id = "10000576"
job_no = "cashier"
key_file = "/tmp/key"
poll_interval = "200ms"
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
/scanpay/scanpay check-config --config /tmp/scanpay.toml > /dev/null 2>&1 || true
/scanpay/scanpay run --config /tmp/scanpay.toml > /tmp/daemon.out 2> /tmp/daemon.log &
daemon=$!
sleep 2
# Devices appear after the daemon started: it finds them on its next retry
# (backoff at most 5 s), so each waits 6 s before typing.
/scanpay/fakescanner --uinput --numpad --name "scanpay keypad" --terminator kpenter --settle 6s --hold 500ms 2865
sleep 1
/scanpay/fakescanner --uinput --name "scanpay fake scanner" --settle 6s --hold 500ms 134567890123456789
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
