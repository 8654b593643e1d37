# Sourced by every script the install suite runs in the guest (as root, in
# /mnt/payload, through agent.sh).
set -eo pipefail
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
export SYSTEMD_PAGER= SYSTEMD_COLORS=0 DEBIAN_FRONTEND=noninteractive
fakescanner=/usr/lib/scanpay/fakescanner

# wait_until SECONDS COMMAND...: runs COMMAND until it succeeds.
wait_until() {
  local end=$((SECONDS + $1)); shift
  until "$@"; do
    if [ $SECONDS -ge $end ]; then echo "timed out: $*" >&2; return 1; fi
    sleep 0.2
  done
}

# scan CODE [SETTLE]: a USB barcode scanner with the ids of a Newland
# (1eab:8203, named in scanpay's udev rules) is plugged in, types CODE after
# SETTLE and is unplugged. scanpay retries a missing device with backoff
# up to 5 s plus a quarter of jitter, so it may take 6.25 s to open a new
# one: 9 s by default. In the background; output in /run/e2e/scan.log.
scan() {
  setsid "$fakescanner" --uinput --id 1eab:8203 --name "Newland NLS-FR40" --settle "${2:-9s}" --hold 1s "$1" \
    > /run/e2e/scan.log 2>&1 < /dev/null &
}

# keypad AMOUNT [SETTLE]: a USB numeric keypad (04d9:1203, the example in
# the udev rules) types AMOUNT in cents and keypad Enter, in the background.
keypad() {
  setsid "$fakescanner" --uinput --numpad --id 04d9:1203 --name "USB keypad" --terminator kpenter \
    --settle "${2:-9s}" --hold 1s "$1" > /run/e2e/keypad.log 2>&1 < /dev/null &
}

# http_get PORT PATH: the status line and body of a GET on loopback.
http_get() {
  exec 5<>"/dev/tcp/127.0.0.1/$1"
  printf 'GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n' "$2" >&5
  tr -d '\r' <&5
  exec 5<&-
}

# main_pid: scanpay's process, 0 when it is not running.
main_pid() { systemctl show -p MainPID --value scanpay; }
