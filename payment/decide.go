package payment

import (
	"fmt"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// Decision is what one gateway answer means for one journaled order. The
// lane, the reconciler and `scanpay query` all ask Decide, so the rules
// live in one place.
type Decision struct {
	// To is the order's next state; zero leaves the state as it is.
	To journal.State
	// Confirm asks for one signed query before anything is approved: a
	// create_order reply's status sits outside the reply's signature.
	Confirm bool
	// Update carries the gateway facts to record (payOrderId, status).
	Update journal.Update
	// Mismatch says why a reply that claims payment does not match the
	// order on disk; the answer then counts as unknown and an operator is
	// alerted.
	Mismatch string
	// Conflict says the gateway contradicts a settled order (paid after
	// the journal recorded a decline, say): an operator must look.
	Conflict string
}

// Facts are what a caller knows about an order beyond the journal.
type Facts struct {
	// CreateRefused is create_order's FAIL reply, when it said FAIL; a
	// query then confirms the decline and lends it this reason.
	CreateRefused *iotpay.Error
	// NeverReached: the gateway has not known the order for long enough,
	// measured on a monotonic clock, that it never received it.
	NeverReached bool
}

// Decide applies one gateway answer (op is create_order or query_order) to
// order o. Rules:
//   - nothing is paid unless a query's own signed status says 2 or 3 and
//     the reply's order number, amount and currency (where present) match
//     the order; a paid create_order reply is confirmed by a query first;
//   - a FAIL about a query request is unknown, never a decline; only status
//     4, 9 (or any above 3) or an order the gateway does not know declines;
//   - an order not final on disk moves; a settled one only records facts,
//     except an unconfirmed one found paid (LATE_PAID) and a declined one
//     found paid (LATE_PAID, with a conflict for the operator).
func Decide(o journal.Order, op string, res iotpay.Result, f Facts) Decision {
	d := Decision{Update: journal.Update{PayOrderID: res.PayOrderID, Status: res.Status, Message: res.Message()}}
	if res.Outcome == iotpay.OutcomePaid {
		why := mismatch(o, res)
		if why == "" && op == "query_order" && res.StatusNested {
			why = "paid status outside the signed reply" // a query's status must be its own, signed one
		}
		if why != "" {
			// Not this order's answer: unknown, and nothing from it is
			// recorded.
			d.Mismatch = why
			d.Update = journal.Update{Status: -1, Message: "gateway reply does not match the order"}
			res = iotpay.Result{Outcome: iotpay.OutcomeUnknown, Status: -1, Amount: -1}
		}
	}
	if op == "create_order" {
		switch res.Outcome {
		case iotpay.OutcomePaid:
			d.Confirm = true
		case iotpay.OutcomeFailed:
			// A refused create is confirmed by a query, so the gateway
			// stays the judge of what it did.
			d.Confirm = true
		}
		d.Update.NotSent = res.Outcome != iotpay.OutcomePaid && res.Err != nil && res.Err.NotSent
		if o.State == journal.StateSubmitting {
			d.To = journal.StatePolling
		}
		if d.Confirm && res.Outcome == iotpay.OutcomePaid {
			// Nothing to record on disk before the confirming query: the
			// order is already open, and recovery queries open orders.
			d.To = 0
		}
		return d
	}
	switch res.Outcome {
	case iotpay.OutcomePaid:
		switch o.State {
		case journal.StateArmed, journal.StateSubmitting, journal.StatePolling:
			d.To, d.Update.Message = journal.StatePaid, ""
		case journal.StateUnconfirmed:
			d.To, d.Update.Message = journal.StateLatePaid, "paid after the sale gave up: refund it"
			if o.Interrupted {
				d.Update.Message = "paid; a restart interrupted the sale: check what the customer was told before refunding"
			}
		case journal.StateDeclined:
			d.To, d.Update.Message = journal.StateLatePaid, "paid after it was recorded declined: refund it"
			d.Conflict = "the gateway says paid, the journal said declined"
		default:
			d.Update.Message = o.Message // settled paid: refresh facts only
		}
	case iotpay.OutcomeFailed:
		if o.State.Open() {
			d.To = journal.StateDeclined
			if f.CreateRefused != nil {
				d.Update.Message = f.CreateRefused.Msg // the decline's own reason beats "cancelled"
			}
		} else {
			if o.State == journal.StatePaid || o.State == journal.StateLatePaid {
				d.Conflict = fmt.Sprintf("the gateway says status %d, the journal says %s", res.Status, o.State)
			}
			d.Update.Message = o.Message
		}
	case iotpay.OutcomeNotFound:
		if !o.State.Open() {
			if o.State == journal.StatePaid || o.State == journal.StateLatePaid {
				d.Conflict = "the gateway does not know a paid order"
			}
			d.Update.Message = o.Message
			break
		}
		switch {
		case o.NotSent:
			d.To, d.Update.Message = journal.StateDeclined, "not sent: gateway unreachable"
		case f.CreateRefused != nil:
			d.To, d.Update.Message = journal.StateDeclined, f.CreateRefused.Msg
		case f.NeverReached && o.CodeHash == "" && o.Channel == "":
			// Armed, interrupted before its code was recorded, and unknown
			// to the gateway: an amount that never became a payment.
			d.To, d.Update.Message = journal.StateCancelled, "never sent"
		case f.NeverReached:
			d.To, d.Update.Message = journal.StateDeclined, "never reached the gateway"
		}
	default:
		if !o.State.Open() {
			d.Update.Message = o.Message
		}
	}
	if d.Mismatch != "" {
		d.Update.PayOrderID = ""
	}
	return d
}

// mismatch says why a paid reply does not speak for order o, or "".
func mismatch(o journal.Order, res iotpay.Result) string {
	switch {
	case res.MchOrderNo != "" && res.MchOrderNo != o.MchOrderNo:
		return fmt.Sprintf("reply names order %s", res.MchOrderNo)
	case res.Amount >= 0 && res.Amount != o.Amount:
		return fmt.Sprintf("reply amount %d, order amount %d", res.Amount, o.Amount)
	case res.Currency != "" && res.Currency != o.Currency:
		return fmt.Sprintf("reply currency %s, order currency %s", res.Currency, o.Currency)
	case o.PayOrderID != "" && res.PayOrderID != "" && res.PayOrderID != o.PayOrderID:
		return fmt.Sprintf("reply names IOTPay order %s, journal has %s", res.PayOrderID, o.PayOrderID)
	}
	return ""
}
