package main

import (
	"context"
	"fmt"
	"net"
	"os"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment"
)

var _ lane = (*payment.Terminal)(nil)

// lane is what the systemd notifier watches.
type lane interface {
	Ready() <-chan struct{}
	Ping(ctx context.Context) (payment.State, error)
}

// healthCheck is a part whose wedging must also withhold the watchdog
// (the register link).
type healthCheck func() error

// systemdRunner tells systemd READY=1 once the journal is open and open
// orders are resumed (devices are opened or being retried by then), sends
// WATCHDOG=1 at half of WATCHDOG_USEC only while the main loop answers its
// health check, and keeps STATUS= up to date. Without NOTIFY_SOCKET every
// notification is a no-op.
func systemdRunner(t lane, log *zap.Logger, checks ...healthCheck) runner {
	return runner{name: "systemd", run: func(ctx context.Context) error {
		select {
		case <-t.Ready():
		case <-ctx.Done():
			return nil
		}
		// One socket for the whole run: go-systemd's SdNotify dials a new
		// one for every message, and the watchdog sends one every few
		// seconds for the life of the lane.
		nt, err := openNotifier()
		if err != nil {
			log.Warn("sd_notify socket unusable; systemd will not hear from scanpay", zap.Error(err))
		}
		defer nt.close()
		notify := func(state string) {
			if err := nt.send(state); err != nil {
				log.Warn("sd_notify failed", zap.Error(err))
			}
		}
		notify(sddaemon.SdNotifyReady + "\nSTATUS=lane ready")
		interval, err := sddaemon.SdWatchdogEnabled(false)
		if err != nil {
			log.Warn("bad WATCHDOG_USEC", zap.Error(err))
		}
		period := 5 * time.Second
		if interval > 0 {
			period = interval / 2
		}
		ticker := time.NewTicker(period)
		defer ticker.Stop()
		healthy, last := true, ""
		for {
			select {
			case <-ctx.Done():
				notify(sddaemon.SdNotifyStopping + "\nSTATUS=stopping")
				return nil
			case <-ticker.C:
			}
			pctx, cancel := context.WithTimeout(ctx, period)
			state, err := t.Ping(pctx)
			cancel()
			for _, check := range checks {
				if err == nil {
					err = check()
				}
			}
			if err != nil {
				if ctx.Err() != nil {
					continue
				}
				// No WATCHDOG=1: if the loop stays wedged, systemd kills and
				// restarts scanpay, which recovers from the journal.
				if healthy {
					log.Error("health check failed; withholding the watchdog ping", zap.Error(err))
				}
				healthy = false
				continue
			}
			healthy = true
			status := fmt.Sprintf("STATUS=lane %s", state)
			msg := status
			if interval > 0 {
				msg = sddaemon.SdNotifyWatchdog + "\n" + status
			}
			if interval > 0 || status != last {
				notify(msg)
				last = status
			}
		}
	}}
}

// notifier is one datagram socket to $NOTIFY_SOCKET, opened once. Without
// NOTIFY_SOCKET (not under systemd) it does nothing.
type notifier struct{ conn *net.UnixConn }

func openNotifier() (*notifier, error) {
	addr := os.Getenv("NOTIFY_SOCKET")
	if addr == "" {
		return &notifier{}, nil
	}
	if addr[0] == '@' {
		addr = "\x00" + addr[1:] // an abstract socket
	}
	conn, err := net.DialUnix("unixgram", nil, &net.UnixAddr{Name: addr, Net: "unixgram"})
	if err != nil {
		return &notifier{}, err
	}
	return &notifier{conn: conn}, nil
}

func (n *notifier) send(state string) error {
	if n == nil || n.conn == nil {
		return nil
	}
	_, err := n.conn.Write([]byte(state))
	return err
}

func (n *notifier) close() {
	if n != nil && n.conn != nil {
		n.conn.Close()
	}
}
