#!/bin/bash
# The install suite's agent in the guest (test rig only): reads requests
# "ID BASE64-SCRIPT" from the virtio port, runs each script as root with
# bash in /mnt/payload, and answers "ID EXIT-STATUS BASE64-OUTPUT".
port=/dev/virtio-ports/org.scanpay.e2e
mkdir -p /run/e2e
while :; do
  # The port reads end-of-file while no host is connected: wait and reopen.
  if [ ! -e "$port" ] || ! exec 3<>"$port"; then sleep 0.5; continue; fi
  while IFS=' ' read -r id script <&3; do
    [ -n "$id" ] || continue
    if ! printf '%s' "$script" | base64 -d > /run/e2e/cmd.sh 2>/dev/null; then
      printf '%s 127 %s\n' "$id" "$(printf 'agent: bad request' | base64 -w0)" >&3
      continue
    fi
    (cd /mnt/payload && exec bash /run/e2e/cmd.sh) > /run/e2e/out 2>&1 < /dev/null 3>&-
    rc=$?
    printf '%s %s %s\n' "$id" "$rc" "$(base64 -w0 < /run/e2e/out)" >&3
  done
  exec 3>&-
  sleep 0.5
done
