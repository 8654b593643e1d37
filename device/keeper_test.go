package device_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/devicetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestKeeperLogsStateChangesOnce(t *testing.T) {
	obs := &devicetest.Devices{}
	k := device.Keeper{Name: "x", Backoff: device.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Observer: obs, Logger: zaptest.NewLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	attempts := 0
	err := k.Run(ctx, func(ctx context.Context, up func()) error {
		attempts++
		if attempts == 20 {
			up()
			cancel()
			return nil
		}
		return os.ErrNotExist
	})
	if err != nil {
		t.Fatal(err)
	}
	if c := obs.Changes(); len(c) != 2 || c[0] || !c[1] {
		t.Fatalf("19 failed attempts then success reported as %v, want [false true]", c)
	}
}

// TestKeeperReopensAfterLoss: a device that worked, then went away, is
// retried until it is back, and each change is reported once.
func TestKeeperReopensAfterLoss(t *testing.T) {
	obs := &devicetest.Devices{}
	k := device.Keeper{Name: "x", Backoff: device.Backoff{Min: time.Millisecond, Max: 2 * time.Millisecond}, Observer: obs, Logger: zaptest.NewLogger(t)}
	ctx, cancel := context.WithCancel(context.Background())
	attempts := 0
	err := k.Run(ctx, func(ctx context.Context, up func()) error {
		attempts++
		switch {
		case attempts == 1:
			up()
			return errors.New("unplugged") // lost after working
		case attempts < 10:
			return os.ErrNotExist // still away
		}
		up()
		cancel()
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if attempts != 10 {
		t.Fatalf("%d attempts, want 10", attempts)
	}
	if c := obs.Changes(); len(c) != 3 || !c[0] || c[1] || !c[2] {
		t.Fatalf("lost, 8 failed reopens, back reported as %v, want [true false true]", c)
	}
}

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"": "", "0100002865": "0100002865", "a\x00b\x1bc\x7fd\r\n": "abcd", "é ok": "é ok"} {
		if got := device.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
