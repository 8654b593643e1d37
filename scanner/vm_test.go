package scanner

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	evdev "github.com/holoplot/go-evdev"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/input"
)

// TestVMUinput runs only inside the QEMU VM (make test-vm), where the
// kernel has evdev and uinput.
func TestVMUinput(t *testing.T) {
	if os.Getenv("SCANPAY_VM") == "" {
		t.Skip("needs a kernel with uinput: run make test-vm")
	}
	fake := os.Getenv("SCANPAY_FAKESCANNER")
	obs := &upCounter{}
	s := &HIDScanner{
		Device:   input.DeviceSpec{Name: "scanpay fake scanner"},
		Decoder:  DecoderConfig{StripAIM: true},
		Backoff:  device.Backoff{Min: 50 * time.Millisecond, Max: 200 * time.Millisecond},
		Logger:   zaptest.NewLogger(t),
		Observer: obs,
	}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan Code, 20)
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx, chanSink(out)) }()

	typeCodes := func(codes ...string) {
		args := append([]string{"--uinput", "--key-delay", "8ms", "--gap", "150ms", "--settle", "1500ms", "--hold", "300ms"}, codes...)
		cmd := exec.Command(fake, args...)
		if b, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("fakescanner: %v\n%s", err, b)
		}
	}
	first := []string{"134567890123456789", "]Q1AbC-123_xyz", "2812345678901234"}
	go typeCodes(first...)
	for _, want := range []string{"134567890123456789", "AbC-123_xyz", "2812345678901234"} {
		select {
		case c := <-out:
			if c.Text != want {
				t.Fatalf("decoded %q, want %q", c.Text, want)
			}
			t.Logf("decoded %s from %s", c.Text, c.Source)
		case <-time.After(30 * time.Second):
			t.Fatalf("no code (waiting for %q)", want)
		}
	}
	// While scanpay holds the grab, nobody else can take the device.
	waitFor(t, "device up", func() bool { return obs.Ups() >= 1 })
	if path, err := s.Device.Find(); err == nil {
		if dev, err := evdev.OpenWithFlags(path, os.O_RDONLY); err == nil {
			if err := dev.Grab(); err == nil {
				t.Error("a second grab succeeded: the device is not held exclusively")
			} else {
				t.Logf("second grab refused as it should be: %v", err)
			}
			dev.Close()
		}
	}
	// fakescanner exits: its device is destroyed (an unplug). A new one
	// (a replug) must be found and read again.
	waitFor(t, "unplug noticed", func() bool { return len(obs.Changes()) >= 2 && obs.Down() })
	go typeCodes("6212345678901234567")
	select {
	case c := <-out:
		if c.Text != "6212345678901234567" {
			t.Fatalf("after replug: %q", c.Text)
		}
	case <-time.After(30 * time.Second):
		t.Fatal("no code after replug")
	}
	if obs.Ups() < 2 {
		t.Fatalf("device changes %v: no reopen", obs.Changes())
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	t.Logf("device changes: %v", obs.Changes())
}
