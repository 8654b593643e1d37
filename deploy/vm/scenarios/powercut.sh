# Power cut during polling. Phase 1: a sale from the register (Concert over
# TCP, immediate answer) and a uinput scanner; once the journal says
# POLLING the host kills the VM. Phase 2, same disk: the journal opens
# clean, the order is resumed and settled PAID as the gateway has it, and
# the register asking again gets approved.
set -e
export HOME=/tmp
trap 'echo "--- daemon log (last lines)"; tail -n 15 /tmp/daemon.log 2>/dev/null' EXIT
phase=$(sed -n 's/.*scanpay\.phase=\([0-9]\).*/\1/p' /proc/cmdline)
mkdir -p /data
mount -t ext4 /dev/vda /data
printf 'TESTKEY1234567890\n' > /tmp/key
chmod 600 /tmp/key
/scanpay/iotpaysim --listen 127.0.0.1:8088 --mch-id 10000576 --key-file /tmp/key --state /data/ledger.json > /tmp/sim.log 2>&1 &
cat > /tmp/scanpay.toml <<TOML
[terminal]
id = "CUT"
[gateway]
url = "http://127.0.0.1:8088"
mch_id = "10000576"
job_no = "cashier"
key_file = "/tmp/key"
poll_interval = "1500ms"
poll_attempts = 40
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
/scanpay/scanpay run --config /tmp/scanpay.toml > /tmp/daemon.out 2> /tmp/daemon.log &
sleep 2
orders() { /scanpay/scanpay orders --config /tmp/scanpay.toml --format json; }
if [ "$phase" = 1 ]; then
  for i in $(seq 1 40); do
    /scanpay/fakeecr --tcp 127.0.0.1:8800 --amount 1052 --private CUT1 --immediate --short --wait 10s && break
    sleep 0.5
  done
  /scanpay/fakescanner --uinput --name "scanpay fake scanner" --settle 6s --hold 500ms 134567890123456789
  for i in $(seq 1 40); do
    if orders | grep -q '"state": "POLLING"'; then break; fi
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
