package journal

import (
	"context"
	"errors"
	"reflect"
	"testing"
	"time"
)

// A sale's commits check the order's state and change it in one statement
// (no read first): they must refuse exactly what a read-then-write would,
// with the same errors, write nothing when they refuse, and leave the row
// that Apply describes.
func TestGuardedUpdates(t *testing.T) {
	ctx := context.Background()
	clock := time.UnixMilli(1_700_000_000_000)
	j, _ := openTemp(t, Options{Now: func() time.Time { clock = clock.Add(time.Millisecond); return clock }})
	arm := func() Order {
		t.Helper()
		o, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "ecr", ECRRef: "INV1"}, num)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	code := func(h string) Code { return Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: h} }
	history := func(no string) int {
		t.Helper()
		h, err := j.History(ctx, no)
		if err != nil {
			t.Fatal(err)
		}
		return len(h)
	}

	first := arm()
	got, err := j.AttachCode(ctx, first.MchOrderNo, code("h1"))
	if err != nil {
		t.Fatal(err)
	}
	stored, err := j.Get(ctx, first.MchOrderNo)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, stored) || got.State != StateSubmitting || got.CodeHash != "h1" || got.Channel != "WX_MICROPAY" {
		t.Fatalf("attach returned %+v, journal has %+v", got, stored)
	}

	// A used code: refused, the order stays armed, no step recorded.
	second := arm()
	if _, err := j.AttachCode(ctx, second.MchOrderNo, code("h1")); !errors.Is(err, ErrCodeUsed) {
		t.Fatalf("used code: %v", err)
	}
	if o, _ := j.Get(ctx, second.MchOrderNo); o.State != StateArmed || o.CodeHash != "" || history(second.MchOrderNo) != 1 {
		t.Fatalf("after a refused attach: %+v, %d steps", o, history(second.MchOrderNo))
	}
	// Not armed (even with a used code: the state is checked first), or
	// not there at all.
	if _, err := j.AttachCode(ctx, first.MchOrderNo, code("h1")); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("attach to a submitting order: %v", err)
	}
	if _, err := j.AttachCode(ctx, first.MchOrderNo, code("h9")); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("attach to a submitting order: %v", err)
	}
	if _, err := j.AttachCode(ctx, "NOPE", code("h9")); !errors.Is(err, ErrNotFound) {
		t.Fatalf("attach to no order: %v", err)
	}

	// Transitions: the row is Apply's, step by step.
	steps := []struct {
		from, to State
		u        Update
	}{
		{StateSubmitting, StatePolling, Update{Status: -1, Message: "no reply", NotSent: true}},
		{StatePolling, StatePolling, Update{PayOrderID: "AM1", Status: 1, Message: "waiting"}},
		{StatePolling, StatePolling, Update{Status: -1, Message: ""}}, // keeps payOrderId, status, notSent
		{StatePolling, StateUnconfirmed, Update{Status: -1, Message: "gave up", Interrupted: true}},
		{StateUnconfirmed, StateLatePaid, Update{PayOrderID: "AM1", Status: 2, Message: "paid late"}},
	}
	cur := got
	for i, s := range steps {
		o, err := j.Transition(ctx, first.MchOrderNo, s.from, s.to, s.u)
		if err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
		want := Apply(cur, s.to, s.u)
		want.UpdatedAt = o.UpdatedAt
		if !reflect.DeepEqual(o, want) {
			t.Fatalf("step %d returned\n %+v\nApply says\n %+v", i, o, want)
		}
		if stored, _ := j.Get(ctx, first.MchOrderNo); !reflect.DeepEqual(stored, o) {
			t.Fatalf("step %d: journal has %+v, returned %+v", i, stored, o)
		}
		if !o.UpdatedAt.After(cur.UpdatedAt) {
			t.Fatalf("step %d: updated_at %v not after %v", i, o.UpdatedAt, cur.UpdatedAt)
		}
		cur = o
	}
	if cur.PayOrderID != "AM1" || cur.Status != 2 || !cur.NotSent || !cur.Interrupted || cur.State != StateLatePaid {
		t.Fatalf("final row %+v", cur)
	}
	n := history(first.MchOrderNo)
	if _, err := j.Transition(ctx, first.MchOrderNo, StatePolling, StatePaid, Update{Status: 2}); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("move from a state the order left: %v", err)
	}
	if _, err := j.Settle(ctx, "NOPE", StateSubmitting, StatePaid, Update{Status: 2}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("settle no order: %v", err)
	}
	if stored, _ := j.Get(ctx, first.MchOrderNo); !reflect.DeepEqual(stored, cur) || history(first.MchOrderNo) != n {
		t.Fatalf("a refused move changed the order: %+v, %d steps (was %d)", stored, history(first.MchOrderNo), n)
	}
}
