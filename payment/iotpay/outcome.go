package iotpay

import (
	"errors"
	"fmt"
)

// Outcome is what a gateway call means for an order. The sale engine
// branches on it; it never needs to read the gateway's message text.
type Outcome int

const (
	// OutcomeUnknown: no trustworthy answer (timeout, transport error, 5xx,
	// unparsable or badly signed reply, an error code that does not say
	// whether the order exists). The order may or may not exist: query it.
	OutcomeUnknown Outcome = iota
	// OutcomePending: the order exists and is not final (status 0 or 1).
	OutcomePending
	// OutcomePaid: the gateway said status 2 or 3 for this order.
	OutcomePaid
	// OutcomeFailed: definitively not paid (FAIL reply that says so, or
	// status 4, 9 or any other status above 3). For refunds: refused.
	OutcomeFailed
	// OutcomeNotFound: query_order says the gateway has no such order.
	OutcomeNotFound
	// OutcomeRefunded: refund_order succeeded.
	OutcomeRefunded
)

func (o Outcome) String() string {
	switch o {
	case OutcomeUnknown:
		return "unknown"
	case OutcomePending:
		return "pending"
	case OutcomePaid:
		return "paid"
	case OutcomeFailed:
		return "failed"
	case OutcomeNotFound:
		return "not_found"
	case OutcomeRefunded:
		return "refunded"
	}
	return fmt.Sprintf("outcome(%d)", int(o))
}

// Status values of an IOTPay order.
const (
	StatusCreated      = 0
	StatusPaying       = 1
	StatusPaid         = 2
	StatusPaidNotified = 3
	StatusCancelledSys = 4
	StatusCancelled    = 9
)

// Error is returned inside a Result when a call did not succeed. Msg is a
// short text safe to show a cashier; Error() adds the operation and cause.
// Neither ever contains the merchant key or a payment code.
type Error struct {
	Op      string // create_order, query_order, refund_order
	Msg     string // safe to show: "gateway unreachable", "insufficient balance"
	Code    string // gateway errCode, when it sent one
	NotSent bool   // the request provably never left this machine (dial failure)
	Err     error  // underlying cause, may be nil
}

func (e *Error) Error() string {
	s := "iotpay " + e.Op + ": " + e.Msg
	if e.Code != "" {
		s += " (code " + e.Code + ")"
	}
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ErrBadSignature is the cause when a reply's sign does not verify or is
// missing where required.
var ErrBadSignature = errors.New("reply signature does not verify")

// ErrReplyTooLarge is the cause when a reply body exceeds MaxReplyBytes.
var ErrReplyTooLarge = errors.New("reply body too large")

// Result is the classified reply of one gateway call.
type Result struct {
	Outcome Outcome
	Status  int // the order status when the gateway sent one, else -1
	// StatusNested: the status came from create_order's nested payOrder
	// object, outside the reply's signature. It never approves on its own.
	StatusNested bool
	PayOrderID   string
	MchOrderNo   string
	ChannelID    string
	Currency     string // empty when absent
	Amount       int64  // -1 when absent
	PaidAt       int64  // paySuccTime, epoch ms, 0 when absent
	Err          *Error
}

// Message is a short text about the result that is safe to show a cashier.
func (r Result) Message() string {
	if r.Err != nil {
		return r.Err.Msg
	}
	return r.Outcome.String()
}
