package main

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// timesyncFlag is the file systemd-timesyncd touches after each successful
// synchronisation (systemd ≥ 239); it is readable inside the unit's
// sandbox, where ProtectClock=yes forbids adjtimex.
const timesyncFlag = "/run/systemd/timesync/synchronized"

// clockSynced reports whether the system clock is synchronised: the
// timesyncd flag file, or else the kernel's NTP status (STA_UNSYNC clear),
// which chrony and ntpd keep. An error says why it cannot tell.
func clockSynced() (bool, error) {
	if _, err := os.Stat(timesyncFlag); err == nil {
		return true, nil
	}
	var tx unix.Timex
	state, err := unix.Adjtimex(&tx)
	if err != nil {
		if errors.Is(err, unix.EPERM) {
			return false, fmt.Errorf("no %s and the kernel's clock status is not readable here (systemd-timesyncd must run, or set terminal.require_clock_sync = false)", timesyncFlag)
		}
		return false, fmt.Errorf("adjtimex: %w", err)
	}
	return state != unix.TIME_ERROR && tx.Status&unix.STA_UNSYNC == 0, nil
}
