package iotpaysim

import (
	"net/http"
	"time"
)

// Fault is what the simulator does to one correctly signed request besides,
// or instead of, answering it as the scenario table says. Tests and the
// whole-lane simulation use faults to play a gateway that refuses, stalls,
// loses replies or lies.
type Fault struct {
	// Refuse answers FAIL with this errCode without processing the
	// request (0011–0015 refuse the request itself; 0010, 0110, 0111,
	// 0118 are system errors). The reply is signed unless the code is
	// 0013 (a gateway that rejects the signature cannot sign for it).
	Refuse string
	// HTTPStatus answers with this status and an HTML body, without
	// processing the request.
	HTTPStatus int
	// DropReply processes the request, then closes the connection without
	// a reply: the client never learns what happened.
	DropReply bool
	// Delay processes the request, then waits this long before replying
	// (past the client's timeout, the reply is lost to it).
	Delay time.Duration
	// Lie alters a query reply that reports payment, with a valid
	// signature: another amount, another currency or another order.
	Lie Lie
	// NoPayOrderID leaves payOrderId out of the reply, as IOTPay's
	// documented query reply does.
	NoPayOrderID bool
	// Misbook (create_order) books the order for another amount or
	// currency than requested, as a gateway that mixes orders up would:
	// its ledger and every later reply then tell the other figures.
	Misbook Lie
}

// Lie is how a lying gateway alters a paid query reply.
type Lie int

// Lies.
const (
	Truth Lie = iota
	LieAmount
	LieCurrency
	LieOrder
)

// FaultFunc picks the fault for a request (endpoint is create_order,
// query_order or refund_order; fields are the request's signed fields).
// The zero Fault means none.
type FaultFunc func(endpoint string, fields map[string]string) Fault

// SetFaults installs f (nil removes it). Safe to call while serving.
func (s *Sim) SetFaults(f FaultFunc) {
	s.mu.Lock()
	s.faults = f
	s.mu.Unlock()
}

func (s *Sim) fault(endpoint string, f map[string]string) Fault {
	s.mu.Lock()
	ff := s.faults
	s.mu.Unlock()
	if ff == nil {
		return Fault{}
	}
	return ff(endpoint, f)
}

// applyLie alters a paid query reply as a lying gateway would.
func applyLie(rep reply, l Lie) {
	switch l {
	case LieAmount:
		if a, ok := rep["amount"].(int64); ok {
			rep["amount"] = a + 100
		}
	case LieCurrency:
		if rep["currency"] == "CAD" {
			rep["currency"] = "USD"
		} else {
			rep["currency"] = "CAD"
		}
	case LieOrder:
		if no, ok := rep["mchOrderNo"].(string); ok {
			rep["mchOrderNo"] = no + "X"
		}
	}
}

// refuseWith writes a FAIL reply for a refused request.
func (s *Sim) refuseWith(w http.ResponseWriter, code string) {
	s.reply(w, failReply(code, "request refused ("+code+")"), code != "0013")
}
