package device_test

import (
	"context"
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

func TestPrintable(t *testing.T) {
	for in, want := range map[string]string{"": "", "0100002865": "0100002865", "a\x00b\x1bc\x7fd\r\n": "abcd", "é ok": "é ok"} {
		if got := device.Printable(in); got != want {
			t.Errorf("Printable(%q) = %q, want %q", in, got, want)
		}
	}
}
