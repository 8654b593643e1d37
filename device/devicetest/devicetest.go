// Package devicetest provides test fixtures for device packages: an
// Observer that records a device coming and going, and a wait on a
// condition for tests that watch a device goroutine from outside.
package devicetest

import (
	"sync"
	"testing"
	"time"

	"github.com/scanpay/scanpay/device"
)

var _ device.Observer = (*Devices)(nil)

// Devices records device up/down changes (a device.Observer).
type Devices struct {
	mu      sync.Mutex
	changes []bool
}

// DeviceUp records a change.
func (d *Devices) DeviceUp(_ string, up bool) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.changes = append(d.changes, up)
}

// Changes returns the changes so far.
func (d *Devices) Changes() []bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([]bool(nil), d.changes...)
}

// Ups counts the times the device came up.
func (d *Devices) Ups() int {
	n := 0
	for _, c := range d.Changes() {
		if c {
			n++
		}
	}
	return n
}

// Down reports whether the latest change was the device going away.
func (d *Devices) Down() bool {
	c := d.Changes()
	return len(c) > 0 && !c[len(c)-1]
}

// WaitFor polls cond for up to 5 s.
func WaitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("timed out waiting for " + what)
		}
		time.Sleep(2 * time.Millisecond)
	}
}
