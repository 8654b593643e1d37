# Concert E+ over 7E1 on real UARTs: scanpay's register link on ttyS1,
# fakeecr playing the register on ttyS2, wired back-to-back. The kernel
# must hold 7E1 on the port, and the sale must be approved end to end.
set -e
export HOME=/tmp
. /lib.sh
trap show_daemon_log EXIT
start_sim
{ gateway_toml 200ms; cat <<TOML
[terminal]
# A busybox guest runs no time daemon: its kernel clock stays "unsynchronised".
require_clock_sync = false
id = "UART"
[scanner]
driver = "evdev"
name = "scanpay fake scanner"
[ecr]
device = "/dev/ttyS1"
baud = 9600
data_bits = 7
parity = "even"
pos_number = "01"
[journal]
path = "/tmp/journal.db"
[log]
format = "console"
TOML
} > /tmp/scanpay.toml
start_daemon
# The register link opens its port on its own; give it a moment under TCG.
for _ in $(seq 1 40); do
  stty -F /dev/ttyS1 -a 2>/dev/null | grep -q ' cs7' && break
  sleep 0.5
done
echo "ttyS1 as scanpay set it: $(stty -F /dev/ttyS1 -a | tr '\n' ' ' | grep -o 'speed [0-9]* baud\|-*cs[78]\|-*parenb\|-*parodd' | tr '\n' ' ')"
stty -F /dev/ttyS1 -a | grep -q ' cs7' 
stty -F /dev/ttyS1 -a | grep -qw 'parenb'
stty -F /dev/ttyS1 -a | grep -qw '\-parodd'
/scanpay/fakeecr --serial /dev/ttyS2 --data-bits 7 --parity even --amount 2865 --private UART1 --wait 60s > /tmp/ecr.out 2>&1 &
ecr=$!
scan 134567890123456789
wait $ecr
cat /tmp/ecr.out
grep -q 'status 0 (approved), amount 28.65' /tmp/ecr.out
grep -q 'report "WX AM' /tmp/ecr.out
