package payment_test

import (
	"testing"
	"time"

	"github.com/scanpay/scanpay/payment"
)

func TestDerivedSettings(t *testing.T) {
	def := payment.DefaultConfig()
	tests := []struct {
		name                          string
		interval                      time.Duration
		attempts                      int
		reconcileFor                  time.Duration
		wantMin, wantMax, wantNotSent time.Duration
	}{
		// The default pace: 5 × 2 s = 10 s first retry; ten windows of
		// 60 s reach the 10 min cap.
		{"defaults", 2 * time.Second, 30, 24 * time.Hour, 10 * time.Second, def.ReconcileMax, def.NotFoundFinalAfter},
		// A slow pace keeps the caps.
		{"slow polling", 10 * time.Second, 100, 24 * time.Hour, def.ReconcileMin, def.ReconcileMax, def.NotFoundFinalAfter},
		// Test-sized windows shorten both.
		{"test-sized", 100 * time.Millisecond, 5, 24 * time.Hour, 500 * time.Millisecond, def.ReconcileMax, 5 * time.Second},
		// The backoff never outlasts the reconciling itself.
		{"short reconcile", 2 * time.Second, 30, time.Minute, 10 * time.Second, time.Minute, def.NotFoundFinalAfter},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := payment.DefaultConfig()
			c.PollInterval, c.PollAttempts, c.ReconcileFor = tc.interval, tc.attempts, tc.reconcileFor
			d := c.Derived()
			if d.ReconcileMin != tc.wantMin || d.ReconcileMax != tc.wantMax || d.NotFoundFinalAfter != tc.wantNotSent {
				t.Fatalf("min %v max %v not-sent %v, want %v %v %v", d.ReconcileMin, d.ReconcileMax, d.NotFoundFinalAfter, tc.wantMin, tc.wantMax, tc.wantNotSent)
			}
			if d.Derived() != d {
				t.Fatal("deriving twice changed the settings")
			}
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
