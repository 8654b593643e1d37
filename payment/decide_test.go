package payment

import (
	"testing"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

func TestDecide(t *testing.T) {
	order := func(st journal.State) journal.Order {
		return journal.Order{MchOrderNo: "L1-00000001-AAAAA", Amount: 2865, Currency: "CAD", State: st, Status: -1,
			Channel: "WX_MICROPAY", CodeMasked: "13************6789", CodeHash: "h"}
	}
	paid := iotpay.Result{Outcome: iotpay.OutcomePaid, Status: 2, MchOrderNo: "L1-00000001-AAAAA", Amount: 2865, Currency: "CAD", PayOrderID: "AM1"}
	with := func(r iotpay.Result, f func(*iotpay.Result)) iotpay.Result { f(&r); return r }
	unknown := iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1, Err: &iotpay.Error{Msg: "gateway timeout"}}
	notSent := iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1, Err: &iotpay.Error{Msg: "gateway unreachable", NotSent: true}}
	pending := iotpay.Result{Outcome: iotpay.OutcomePending, Status: 1, Amount: -1, PayOrderID: "AM1"}
	cancelled := iotpay.Result{Outcome: iotpay.OutcomeFailed, Status: 9, Amount: -1, Err: &iotpay.Error{Msg: "cancelled by customer"}}
	notFound := iotpay.Result{Outcome: iotpay.OutcomeNotFound, Status: -1, Amount: -1, Err: &iotpay.Error{Msg: "order does not exist", Code: "0112"}}
	refusedCreate := iotpay.Result{Outcome: iotpay.OutcomeFailed, Status: -1, Amount: -1, Err: &iotpay.Error{Msg: "insufficient balance"}}
	nested := with(paid, func(r *iotpay.Result) { r.StatusNested = true })

	tests := []struct {
		name     string
		state    journal.State
		notSent  bool
		op       string
		res      iotpay.Result
		facts    Facts
		to       journal.State
		confirm  bool
		mismatch bool
		conflict bool
	}{
		// create_order never approves on its own.
		{"create paid → confirm by query", journal.StateSubmitting, false, "create_order", nested, Facts{}, 0, true, false, false},
		{"create refused → confirm by query", journal.StateSubmitting, false, "create_order", refusedCreate, Facts{}, journal.StatePolling, true, false, false},
		{"create pending → poll", journal.StateSubmitting, false, "create_order", pending, Facts{}, journal.StatePolling, false, false, false},
		{"create lost → poll", journal.StateSubmitting, false, "create_order", unknown, Facts{}, journal.StatePolling, false, false, false},
		{"create paid other amount → unknown", journal.StateSubmitting, false, "create_order", with(nested, func(r *iotpay.Result) { r.Amount = 1 }), Facts{}, journal.StatePolling, false, true, false},
		// Queries.
		{"query paid", journal.StatePolling, false, "query_order", paid, Facts{}, journal.StatePaid, false, false, false},
		{"query paid while submitting", journal.StateSubmitting, false, "query_order", paid, Facts{}, journal.StatePaid, false, false, false},
		{"query paid, no amount or currency in reply", journal.StatePolling, false, "query_order", with(paid, func(r *iotpay.Result) { r.Amount, r.Currency, r.MchOrderNo = -1, "", "" }), Facts{}, journal.StatePaid, false, false, false},
		{"query paid, nested status", journal.StatePolling, false, "query_order", nested, Facts{}, 0, false, true, false},
		{"query paid, other amount", journal.StatePolling, false, "query_order", with(paid, func(r *iotpay.Result) { r.Amount = 2866 }), Facts{}, 0, false, true, false},
		{"query paid, other currency", journal.StatePolling, false, "query_order", with(paid, func(r *iotpay.Result) { r.Currency = "USD" }), Facts{}, 0, false, true, false},
		{"query paid, other order", journal.StatePolling, false, "query_order", with(paid, func(r *iotpay.Result) { r.MchOrderNo = "L1-X" }), Facts{}, 0, false, true, false},
		{"query paid after unconfirmed → late", journal.StateUnconfirmed, false, "query_order", paid, Facts{}, journal.StateLatePaid, false, false, false},
		{"query paid after declined → late, conflict", journal.StateDeclined, false, "query_order", paid, Facts{}, journal.StateLatePaid, false, false, true},
		{"query paid on paid → facts only", journal.StatePaid, false, "query_order", paid, Facts{}, 0, false, false, false},
		{"query cancelled", journal.StatePolling, false, "query_order", cancelled, Facts{}, journal.StateDeclined, false, false, false},
		{"query cancelled on unconfirmed", journal.StateUnconfirmed, false, "query_order", cancelled, Facts{}, journal.StateDeclined, false, false, false},
		{"query cancelled on paid → conflict", journal.StatePaid, false, "query_order", cancelled, Facts{}, 0, false, false, true},
		{"query pending", journal.StatePolling, false, "query_order", pending, Facts{}, 0, false, false, false},
		{"query unknown", journal.StatePolling, false, "query_order", unknown, Facts{}, 0, false, false, false},
		{"query not found, sent", journal.StatePolling, false, "query_order", notFound, Facts{}, 0, false, false, false},
		{"query not found, not sent", journal.StatePolling, true, "query_order", notFound, Facts{}, journal.StateDeclined, false, false, false},
		{"query not found after a refused create", journal.StatePolling, false, "query_order", notFound, Facts{CreateRefused: refusedCreate.Err}, journal.StateDeclined, false, false, false},
		{"query not found long enough", journal.StateUnconfirmed, false, "query_order", notFound, Facts{NeverReached: true}, journal.StateDeclined, false, false, false},
		{"query not found on paid → conflict", journal.StatePaid, false, "query_order", notFound, Facts{}, 0, false, false, true},
		{"create lost, dial failed", journal.StateSubmitting, false, "create_order", notSent, Facts{}, journal.StatePolling, false, false, false},
		// Recovered ARMED (sent, its code's commit lost): the gateway settles it.
		{"recovered armed, query paid", journal.StateArmed, false, "query_order", paid, Facts{}, journal.StatePaid, false, false, false},
		{"recovered armed, query paid other amount", journal.StateArmed, false, "query_order", with(paid, func(r *iotpay.Result) { r.Amount = 2866 }), Facts{}, 0, false, true, false},
		{"recovered armed, query cancelled", journal.StateArmed, false, "query_order", cancelled, Facts{}, journal.StateDeclined, false, false, false},
		{"recovered armed, query pending", journal.StateArmed, false, "query_order", pending, Facts{}, 0, false, false, false},
		{"recovered armed, not found", journal.StateArmed, false, "query_order", notFound, Facts{}, 0, false, false, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := order(tc.state)
			o.NotSent = tc.notSent
			d := Decide(o, tc.op, tc.res, tc.facts)
			if d.To != tc.to || d.Confirm != tc.confirm || (d.Mismatch != "") != tc.mismatch || (d.Conflict != "") != tc.conflict {
				t.Fatalf("got to=%s confirm=%v mismatch=%q conflict=%q, want to=%s confirm=%v mismatch=%v conflict=%v",
					d.To, d.Confirm, d.Mismatch, d.Conflict, tc.to, tc.confirm, tc.mismatch, tc.conflict)
			}
			if d.Mismatch != "" && d.Update.PayOrderID != "" {
				t.Fatal("facts from a mismatching reply would be recorded")
			}
			if d.To != 0 && !journal.CanMove(tc.state, d.To) {
				t.Fatalf("decided %s → %s, which the journal does not allow", tc.state, d.To)
			}
		})
	}
	// An order armed, interrupted before its code was written, that the
	// gateway never knew: an amount that never became a payment.
	armed := journal.Order{MchOrderNo: "L1-00000002-BBBBB", Amount: 100, Currency: "CAD", State: journal.StateUnconfirmed, Status: -1}
	if d := Decide(armed, "query_order", notFound, Facts{NeverReached: true}); d.To != journal.StateCancelled {
		t.Fatalf("codeless order never sent: %s", d.To)
	}
	if d := Decide(armed, "query_order", notFound, Facts{}); d.To != 0 {
		t.Fatalf("codeless order not found once: %s", d.To)
	}
	if d := Decide(order(journal.StateSubmitting), "create_order", notSent, Facts{}); !d.Update.NotSent {
		t.Fatal("a dial failure must be recorded as not sent")
	}
	if d := Decide(order(journal.StatePolling), "query_order", with(cancelled, func(*iotpay.Result) {}), Facts{CreateRefused: refusedCreate.Err}); d.Update.Message != "insufficient balance" {
		t.Fatalf("the create's reason must win: %q", d.Update.Message)
	}
}
