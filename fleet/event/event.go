// Package event is the wire contract between a lane and head office: the
// versioned JSON of an order or refund event and of a heartbeat, the NATS
// subjects they travel on, and strict parsing that head office applies to
// everything it receives. Lanes write events into their journal's outbox;
// head office parses them back. Nothing here ever carries a full payment
// code or the merchant key: an order has only the masked code.
package event

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Version is the event and heartbeat format this code writes and reads.
// A reader refuses any other version, so a format change is always a new
// number and head office is upgraded first.
const Version = 1

// MaxSize caps an encoded event or heartbeat. A real one is well under
// 1 KiB; anything bigger is refused before it is decoded.
const MaxSize = 8 << 10

// Kinds of event.
const (
	KindOrder    = "order"    // an order was written or changed state
	KindRefund   = "refund"   // a refund was written or finished (Order is the order after it)
	KindSnapshot = "snapshot" // an existing order, sent once when the fleet link is switched on
)

// Subject prefix and the per-lane subjects. A lane publishes only below
// Prefix.lane.LANE. (server permissions enforce it), head office checks
// that the lane in the body matches the subject.
const Prefix = "scanpay"

// EventsSubject is where a lane's events go (captured by the stream).
func EventsSubject(prefix, lane string) string { return prefix + ".lane." + lane + ".events" }

// HeartbeatSubject is where a lane's heartbeats go (core NATS, not stored).
func HeartbeatSubject(prefix, lane string) string { return prefix + ".lane." + lane + ".heartbeat" }

// LaneOf returns the lane named by a lane subject and its last token
// ("events" or "heartbeat"), or false when the subject is not a lane subject.
func LaneOf(prefix, subject string) (lane, kind string, ok bool) {
	rest, found := strings.CutPrefix(subject, prefix+".lane.")
	if !found {
		return "", "", false
	}
	lane, kind, found = strings.Cut(rest, ".")
	if !found || !laneID.MatchString(lane) || strings.Contains(kind, ".") {
		return "", "", false
	}
	return lane, kind, true
}

// MsgID is the JetStream de-duplication id of a lane's event.
func MsgID(lane string, seq uint64) string { return lane + "-" + strconv.FormatUint(seq, 10) }

// Event is one change on a lane. Seq counts the lane's events from 1 with
// no gaps, across restarts; for one order, a higher Seq is a later state.
type Event struct {
	V      int       `json:"v"`
	Lane   string    `json:"lane"`
	Seq    uint64    `json:"seq"`
	Kind   string    `json:"kind"`
	At     time.Time `json:"at"`
	Order  Order     `json:"order"`
	Refund *Refund   `json:"refund,omitempty"`
}

// Order is an order as the lane's journal has it after the change.
type Order struct {
	MchOrderNo string    `json:"mchOrderNo"`
	Amount     int64     `json:"amount"` // cents
	Currency   string    `json:"currency"`
	Channel    string    `json:"channel"`
	State      string    `json:"state"`
	PayOrderID string    `json:"payOrderId"`
	Status     int       `json:"status"` // last gateway status, -1 when none
	CodeMasked string    `json:"codeMasked"`
	Source     string    `json:"source"`
	ECRRef     string    `json:"ecrRef"`
	Refunded   int64     `json:"refunded"` // cents refunded (accepted refunds)
	NotSent    bool      `json:"notSent"`
	Message    string    `json:"message"`
	CreatedAt  time.Time `json:"createdAt"`
	UpdatedAt  time.Time `json:"updatedAt"`
}

// Refund is one refund of the event's order.
type Refund struct {
	MchRefundNo string    `json:"mchRefundNo"`
	Amount      int64     `json:"amount"`
	State       string    `json:"state"` // SENT, DONE, FAILED, UNKNOWN
	Message     string    `json:"message"`
	CreatedAt   time.Time `json:"createdAt"`
	UpdatedAt   time.Time `json:"updatedAt"`
}

// Heartbeat is a lane's periodic health report.
type Heartbeat struct {
	V       int             `json:"v"`
	Lane    string          `json:"lane"`
	At      time.Time       `json:"at"`
	Version string          `json:"version"` // scanpay version
	State   string          `json:"state"`   // lane state: IDLE, POLLING, …
	Devices map[string]bool `json:"devices"` // device name → up
	Backlog int64           `json:"backlog"` // events not yet acknowledged by JetStream
	Oldest  *time.Time      `json:"oldest,omitempty"`
	Dropped int64           `json:"dropped"` // events dropped because the backlog was full
	LastSeq uint64          `json:"lastSeq"` // newest event written
}

// Errors a reader branches on; every parse error wraps one of them, and
// Reason names it for metrics.
var (
	ErrTooLarge  = errors.New("too large")
	ErrMalformed = errors.New("malformed")
	ErrVersion   = errors.New("unknown version")
	ErrInvalid   = errors.New("invalid field")
	ErrWrongLane = errors.New("lane does not match the subject")
)

// Reason is a short label for a parse error (a metric label).
func Reason(err error) string {
	for _, r := range []struct {
		err  error
		name string
	}{{ErrTooLarge, "too_large"}, {ErrMalformed, "malformed"}, {ErrVersion, "version"}, {ErrInvalid, "invalid"}, {ErrWrongLane, "wrong_lane"}} {
		if errors.Is(err, r.err) {
			return r.name
		}
	}
	return "other"
}

var (
	laneID = regexp.MustCompile(`^[A-Za-z0-9_]{1,12}$`)
	// Journal states and refund states; head office stores nothing else.
	orderStates = map[string]bool{"ARMED": true, "CANCELLED": true, "SUBMITTING": true, "POLLING": true, "PAID": true, "DECLINED": true,
		"UNCONFIRMED": true, "LATE_PAID": true}
	refundStates = map[string]bool{"SENT": true, "DONE": true, "FAILED": true, "UNKNOWN": true}
	// A masked code keeps at most the first 2 and last 4 characters.
	maskedCode = regexp.MustCompile(`^$|^[0-9A-Za-z]{0,2}\*+[0-9A-Za-z]{0,4}$`)
)

// ValidLane reports whether s is a lane id (a terminal id).
func ValidLane(s string) bool { return laneID.MatchString(s) }

// decode reads one JSON object strictly: size cap, no unknown fields, no
// trailing data.
func decode(data []byte, v any) error {
	if len(data) > MaxSize {
		return fmt.Errorf("%w: %d bytes (at most %d)", ErrTooLarge, len(data), MaxSize)
	}
	var probe struct {
		V *int `json:"v"`
	}
	if err := json.Unmarshal(data, &probe); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if probe.V == nil {
		return fmt.Errorf("%w: no version", ErrMalformed)
	}
	if *probe.V != Version {
		return fmt.Errorf("%w: %d (this head office reads %d)", ErrVersion, *probe.V, Version)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("%w: %w", ErrMalformed, err)
	}
	if dec.More() {
		return fmt.Errorf("%w: data after the object", ErrMalformed)
	}
	return nil
}

// Parse reads and checks one event received on subject; subjectLane is the
// lane the subject names ("" skips that check).
func Parse(data []byte, subjectLane string) (Event, error) {
	var e Event
	if err := decode(data, &e); err != nil {
		return Event{}, err
	}
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	if subjectLane != "" && e.Lane != subjectLane {
		return Event{}, fmt.Errorf("%w: event of lane %q on lane %q's subject", ErrWrongLane, e.Lane, subjectLane)
	}
	return e, nil
}

// Validate checks every field a reader relies on.
func (e Event) Validate() error {
	bad := func(format string, a ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrInvalid}, a...)...)
	}
	o := e.Order
	switch {
	case e.V != Version:
		return fmt.Errorf("%w: %d", ErrVersion, e.V)
	case !laneID.MatchString(e.Lane):
		return bad("lane %q", e.Lane)
	case e.Seq == 0 || e.Seq > 1<<53:
		return bad("seq %d", e.Seq)
	case e.Kind != KindOrder && e.Kind != KindRefund && e.Kind != KindSnapshot:
		return bad("kind %q", e.Kind)
	case e.At.IsZero():
		return bad("no time")
	case o.MchOrderNo == "" || len(o.MchOrderNo) > 32:
		return bad("mchOrderNo %q", o.MchOrderNo)
	case o.Amount <= 0 || o.Amount > 99999999:
		return bad("amount %d", o.Amount)
	case o.Currency != "CAD" && o.Currency != "USD":
		return bad("currency %q", o.Currency)
	case !orderStates[o.State]:
		return bad("state %q", o.State)
	case o.Refunded < 0 || o.Refunded > o.Amount:
		return bad("refunded %d of %d", o.Refunded, o.Amount)
	case !maskedCode.MatchString(o.CodeMasked) || len(o.CodeMasked) > 40:
		// A full code in an event would be a leak: refuse it.
		return bad("code is not masked")
	case o.CreatedAt.IsZero():
		return bad("order without creation time")
	case len(o.Channel) > 32 || len(o.PayOrderID) > 64 || len(o.Source) > 16 || len(o.ECRRef) > 64 || len(o.Message) > 512:
		return bad("field too long")
	case e.Kind == KindRefund && e.Refund == nil:
		return bad("refund event without a refund")
	case e.Kind != KindRefund && e.Refund != nil:
		return bad("%s event with a refund", e.Kind)
	}
	if r := e.Refund; r != nil {
		switch {
		case r.MchRefundNo == "" || len(r.MchRefundNo) > 32:
			return bad("mchRefundNo %q", r.MchRefundNo)
		case r.Amount <= 0 || r.Amount > o.Amount:
			return bad("refund amount %d", r.Amount)
		case !refundStates[r.State]:
			return bad("refund state %q", r.State)
		case len(r.Message) > 512:
			return bad("field too long")
		}
	}
	return nil
}

// ParseHeartbeat reads and checks a heartbeat received on subject.
func ParseHeartbeat(data []byte, subjectLane string) (Heartbeat, error) {
	var h Heartbeat
	if err := decode(data, &h); err != nil {
		return Heartbeat{}, err
	}
	switch {
	case !laneID.MatchString(h.Lane):
		return Heartbeat{}, fmt.Errorf("%w: lane %q", ErrInvalid, h.Lane)
	case h.At.IsZero() || h.Backlog < 0 || h.Dropped < 0 || len(h.Version) > 64 || len(h.State) > 32 || len(h.Devices) > 16:
		return Heartbeat{}, fmt.Errorf("%w: heartbeat fields", ErrInvalid)
	case subjectLane != "" && h.Lane != subjectLane:
		return Heartbeat{}, fmt.Errorf("%w: heartbeat of lane %q on lane %q's subject", ErrWrongLane, h.Lane, subjectLane)
	}
	return h, nil
}
