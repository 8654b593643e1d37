# Power cut while the order is in flight. Phase 1: a sale from the register
# (Concert over TCP, immediate answer) and a uinput scanner; once the
# journal shows the code attached (SUBMITTING: committed without its own
# fsync, so the cut may take it back to ARMED) and the gateway's ledger
# holds the order (the customer is "entering a password"), the host kills
# the VM.
# Phase 2, same disk: the journal opens, the order (ARMED or SUBMITTING)
# is resumed and settled PAID as the gateway has it, and the register
# asking again gets approved.
set -e
export HOME=/tmp
. /lib.sh
trap show_daemon_log EXIT
phase=$(sed -n 's/.*scanpay\.phase=\([0-9]\).*/\1/p' /proc/cmdline)
mkdir -p /data
mount -t ext4 /dev/vda /data
start_sim /data/ledger.json
{ gateway_toml 1500ms; cat <<TOML
poll_attempts = 40
[terminal]
# A busybox guest runs no time daemon: its kernel clock stays "unsynchronised".
require_clock_sync = false
id = "CUT"
[scanner]
driver = "evdev"
name = "scanpay fake scanner"
[ecr]
listen = "127.0.0.1:8800"
[journal]
path = "/data/journal.db"
[log]
format = "console"
TOML
} > /tmp/scanpay.toml
start_daemon
orders() { /scanpay/scanpay orders --config /tmp/scanpay.toml --format json; }
if [ "$phase" = 1 ]; then
  # A011: the answer comes at once, "not verified" (exit 4). Exit 1 means
  # the link is not listening yet.
  for i in $(seq 1 40); do
    rc=0
    /scanpay/fakeecr --tcp 127.0.0.1:8800 --amount 1052 --private CUT1 --immediate --short --wait 10s || rc=$?
    [ "$rc" = 1 ] || break
    sleep 0.5
  done
  [ "$rc" = 4 ]
  scan 134567890123456789
  for i in $(seq 1 40); do
    # The code attached on the lane's side, and the order on the gateway's.
    if orders | grep -q '"state": "SUBMITTING"' && grep -q MchOrderNo /data/ledger.json 2>/dev/null; then break; fi
    sleep 0.25
  done
  orders | grep '"state"'
  echo "SCANPAY-VM: CUT"
  sleep 600
fi
echo "after the cut: $(grep -o '"MchOrderNo"' /data/ledger.json | wc -l) order(s) in the gateway's ledger"
for i in $(seq 1 60); do
  if orders | grep -q '"state": "PAID"'; then break; fi
  sleep 0.5
done
orders > /tmp/orders.json
cat /tmp/orders.json | grep -E '"(mchOrderNo|state|amount)"'
/scanpay/fakeecr --tcp 127.0.0.1:8800 --amount 1052 --private CUT1 --short
grep -q '"state": "PAID"' /tmp/orders.json
[ "$(grep -c '"mchOrderNo"' /tmp/orders.json)" = 1 ]
grep -q '"Status":2' /data/ledger.json
