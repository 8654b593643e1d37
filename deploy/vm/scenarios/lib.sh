# Helpers the daemon scenarios share (sourced as /lib.sh in the guest).

# start_sim [LEDGER]: the gateway simulator on 127.0.0.1:8088 with the test
# key in /tmp/key, keeping its ledger in LEDGER when given.
start_sim() {
  printf 'TESTKEY1234567890\n' > /tmp/key
  chmod 600 /tmp/key
  /scanpay/iotpaysim --listen 127.0.0.1:8088 --mch-id 10000576 --key-file /tmp/key ${1:+--state "$1"} > /tmp/sim.log 2>&1 &
}

# gateway_toml POLL_INTERVAL: the [gateway] section pointing at start_sim.
gateway_toml() {
  cat <<TOML
[gateway]
url = "http://127.0.0.1:8088"
mch_id = "10000576"
job_no = "cashier"
key_file = "/tmp/key"
poll_interval = "$1"
TOML
}

# start_daemon: scanpay with /tmp/scanpay.toml, log in /tmp/daemon.log.
start_daemon() {
  /scanpay/scanpay run --config /tmp/scanpay.toml > /tmp/daemon.out 2> /tmp/daemon.log &
  daemon=$!
  # Under TCG a start takes seconds: wait for the lane (at most 30 s; a
  # lane still recovering an order is checked by the scenario itself).
  for _ in $(seq 1 60); do
    grep -q "lane ready" /tmp/daemon.log 2>/dev/null && break
    sleep 0.5
  done
}

# scan CODE: a virtual HID scanner types CODE. The device appears after the
# daemon started, which finds it on its next retry (backoff at most 5 s).
scan() {
  /scanpay/fakescanner --uinput --name "scanpay fake scanner" --settle 6s --hold 500ms "$1"
}

show_daemon_log() { echo "--- daemon log (last lines)"; tail -n 15 /tmp/daemon.log 2>/dev/null; tail -n 5 /tmp/daemon.out 2>/dev/null; }
