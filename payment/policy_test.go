package payment_test

import (
	"errors"
	"strings"
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

func TestCheckLane(t *testing.T) {
	if errs := payment.CheckLane("LANE_1", "USD", payment.MaxAmountLimit); len(errs) != 0 {
		t.Fatalf("good lane refused: %v", errs)
	}
	tests := []struct {
		id, currency string
		max          int64
		want         []payment.LaneField
	}{
		{"", "CAD", 100, []payment.LaneField{payment.FieldTerminalID}},
		{"has space", "CAD", 100, []payment.LaneField{payment.FieldTerminalID}},
		{"ABCDEFGHIJKLM", "CAD", 100, []payment.LaneField{payment.FieldTerminalID}},
		{"L1", "EUR", 100, []payment.LaneField{payment.FieldCurrency}},
		{"L1", "cad", 100, []payment.LaneField{payment.FieldCurrency}},
		{"L1", "CAD", 0, []payment.LaneField{payment.FieldMaxAmount}},
		{"L1", "CAD", payment.MaxAmountLimit + 1, []payment.LaneField{payment.FieldMaxAmount}},
		// Every broken rule is reported, so config names them all at once.
		{"a b", "EUR", -1, []payment.LaneField{payment.FieldTerminalID, payment.FieldCurrency, payment.FieldMaxAmount}},
	}
	for _, tc := range tests {
		errs := payment.CheckLane(tc.id, tc.currency, tc.max)
		if len(errs) != len(tc.want) {
			t.Errorf("%q %q %d: %v, want %v", tc.id, tc.currency, tc.max, errs, tc.want)
			continue
		}
		for i, err := range errs {
			var le *payment.LaneError
			if !errors.As(err, &le) || le.Field != tc.want[i] || !strings.HasPrefix(err.Error(), string(tc.want[i])+" ") {
				t.Errorf("%q %q %d: error %d is %v, want one about %s", tc.id, tc.currency, tc.max, i, err, tc.want[i])
			}
		}
	}
}
