package journal

import "fmt"

// State is an order's state. The numbers are stable; the names are what
// the database stores, so the journal reads well in sqlite3.
type State int

const (
	// StateArmed: the amount is armed and the order on disk, waiting for
	// the customer's code. Once a code is scanned create_order goes out at
	// once and the code is attached while it is in flight, so an armed
	// order may have been sent: open.
	StateArmed State = 7
	// StateCancelled: an armed amount dropped before any code (cancelled
	// or timed out): never sent. Final.
	StateCancelled State = 8
	// StateSubmitting: the order is on disk and create_order is being sent
	// (or may have been sent). Open.
	StateSubmitting State = 1
	// StatePolling: create_order did not settle the order; it is being
	// queried. Open.
	StatePolling State = 2
	// StatePaid: the gateway said status 2 or 3 within the sale. Final.
	StatePaid State = 3
	// StateDeclined: definitively not paid. Final.
	StateDeclined State = 4
	// StateUnconfirmed: the polling window ended without a final answer;
	// the customer was told "not confirmed" and the reconciler follows it.
	// Open.
	StateUnconfirmed State = 5
	// StateLatePaid: found paid after the sale gave up on it; it must be
	// refunded (automatically or by the operator). Final, but listed as open
	// until refunded.
	StateLatePaid State = 6
)

var stateNames = map[State]string{
	StateArmed:       "ARMED",
	StateCancelled:   "CANCELLED",
	StateSubmitting:  "SUBMITTING",
	StatePolling:     "POLLING",
	StatePaid:        "PAID",
	StateDeclined:    "DECLINED",
	StateUnconfirmed: "UNCONFIRMED",
	StateLatePaid:    "LATE_PAID",
}

func (s State) String() string {
	if n, ok := stateNames[s]; ok {
		return n
	}
	return fmt.Sprintf("STATE(%d)", int(s))
}

// ParseState reads a state name as String writes it.
func ParseState(name string) (State, error) {
	for s, n := range stateNames {
		if n == name {
			return s, nil
		}
	}
	return 0, fmt.Errorf("unknown order state %q", name)
}

// Open reports whether the order's outcome is not settled yet.
func (s State) Open() bool {
	return s == StateArmed || s == StateSubmitting || s == StatePolling || s == StateUnconfirmed
}

// transitions lists every allowed move. Final states only move on when the
// gateway later proves an order paid that the lane did not record paid.
var transitions = map[State][]State{
	// An armed order gets its code (AttachCode) or is dropped before any
	// code. Found open after a restart it may have been sent (its code's
	// commit lost): the gateway's answer settles it like a sent order's,
	// or it goes to the reconciler.
	StateArmed:       {StateSubmitting, StatePaid, StateDeclined, StateCancelled, StateUnconfirmed},
	StateSubmitting:  {StatePolling, StatePaid, StateDeclined, StateUnconfirmed},
	StatePolling:     {StatePaid, StateDeclined, StateUnconfirmed},
	StateUnconfirmed: {StateLatePaid, StateDeclined, StateCancelled},
	// A declined order the gateway later shows paid (it was declined as
	// never received, say) must still be refunded.
	StateDeclined: {StateLatePaid},
}

// CanMove reports whether from → to is an allowed transition.
func CanMove(from, to State) bool {
	for _, s := range transitions[from] {
		if s == to {
			return true
		}
	}
	return false
}

// RefundState is the state of one refund.
type RefundState string

// Refund states.
const (
	RefundSent    RefundState = "SENT"    // on disk, refund_order sent or about to be
	RefundDone    RefundState = "DONE"    // the gateway accepted it
	RefundFailed  RefundState = "FAILED"  // the gateway refused it
	RefundUnknown RefundState = "UNKNOWN" // the reply was lost: re-check with the operator
)
