package event

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"
)

func good() Event {
	at := time.Date(2026, 11, 27, 15, 0, 0, 0, time.UTC)
	return Event{V: Version, Lane: "L01", Seq: 7, Kind: KindOrder, At: at, Order: Order{MchOrderNo: "L01-00000007-AB12C",
		Amount: 2865, Currency: "CAD", Channel: "WX_MICROPAY", State: "PAID", PayOrderID: "AM1", Status: 2,
		CodeMasked: "13************6789", Source: "ecr", CreatedAt: at, UpdatedAt: at}}
}

func encode(t testing.TB, e any) []byte {
	b, err := json.Marshal(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParse(t *testing.T) {
	ok := encode(t, good())
	if e, err := Parse(ok, "L01"); err != nil || e.Order.Amount != 2865 {
		t.Fatalf("good event: %+v, %v", e, err)
	}
	mut := func(f func(*Event)) []byte {
		e := good()
		f(&e)
		return encode(t, e)
	}
	cases := []struct {
		name    string
		data    []byte
		subject string
		want    error
	}{
		{"truncated", ok[:len(ok)-3], "L01", ErrMalformed},
		{"not json", []byte("hello"), "L01", ErrMalformed},
		{"no version", []byte(`{"lane":"L01"}`), "L01", ErrMalformed},
		{"oversized", []byte(`{"v":1,"pad":"` + strings.Repeat("x", MaxSize) + `"}`), "L01", ErrTooLarge},
		{"future version", mut(func(e *Event) { e.V = 2 }), "L01", ErrVersion},
		{"unknown field", []byte(strings.Replace(string(ok), `"seq"`, `"extra":1,"seq"`, 1)), "L01", ErrMalformed},
		{"trailing data", append(append([]byte{}, ok...), []byte(` {}`)...), "L01", ErrMalformed},
		{"other lane", ok, "L02", ErrWrongLane},
		{"bad lane", mut(func(e *Event) { e.Lane = "L 1" }), "", ErrInvalid},
		{"seq 0", mut(func(e *Event) { e.Seq = 0 }), "L01", ErrInvalid},
		{"unknown kind", mut(func(e *Event) { e.Kind = "delete" }), "L01", ErrInvalid},
		{"no time", mut(func(e *Event) { e.At = time.Time{} }), "L01", ErrInvalid},
		{"no order", mut(func(e *Event) { e.Order.MchOrderNo = "" }), "L01", ErrInvalid},
		{"zero amount", mut(func(e *Event) { e.Order.Amount = 0 }), "L01", ErrInvalid},
		{"currency", mut(func(e *Event) { e.Order.Currency = "EUR" }), "L01", ErrInvalid},
		{"state", mut(func(e *Event) { e.Order.State = "APPROVED" }), "L01", ErrInvalid},
		{"over-refunded", mut(func(e *Event) { e.Order.Refunded = 3000 }), "L01", ErrInvalid},
		{"full code", mut(func(e *Event) { e.Order.CodeMasked = "134567890123456789" }), "L01", ErrInvalid},
		{"refund without refund", mut(func(e *Event) { e.Kind = KindRefund }), "L01", ErrInvalid},
		{"refund on order event", mut(func(e *Event) { e.Refund = &Refund{MchRefundNo: "R", Amount: 1, State: "DONE"} }), "L01", ErrInvalid},
		{"refund state", mut(func(e *Event) { e.Kind, e.Refund = KindRefund, &Refund{MchRefundNo: "R", Amount: 1, State: "MAYBE"} }), "L01", ErrInvalid},
		{"refund too big", mut(func(e *Event) { e.Kind, e.Refund = KindRefund, &Refund{MchRefundNo: "R", Amount: 9999, State: "DONE"} }), "L01", ErrInvalid},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := Parse(c.data, c.subject)
			if !errors.Is(err, c.want) {
				t.Fatalf("got %v, want %v", err, c.want)
			}
			if Reason(err) == "other" {
				t.Fatalf("no reason for %v", err)
			}
		})
	}
}

func TestSubjects(t *testing.T) {
	if s := EventsSubject(Prefix, "L01"); s != "scanpay.lane.L01.events" {
		t.Fatal(s)
	}
	for _, c := range []struct {
		subject, lane, kind string
		ok                  bool
	}{
		{"scanpay.lane.L01.events", "L01", "events", true},
		{"scanpay.lane.L01.heartbeat", "L01", "heartbeat", true},
		{"scanpay.lane.L01", "", "", false},
		{"scanpay.lane.L01.events.x", "", "", false},
		{"other.lane.L01.events", "", "", false},
		{"scanpay.lane.*.events", "", "", false},
	} {
		lane, kind, ok := LaneOf(Prefix, c.subject)
		if lane != c.lane || kind != c.kind || ok != c.ok {
			t.Errorf("%s: %q %q %v", c.subject, lane, kind, ok)
		}
	}
	if MsgID("L01", 42) != "L01-42" {
		t.Fatal(MsgID("L01", 42))
	}
}

func TestParseHeartbeat(t *testing.T) {
	hb := Heartbeat{V: 1, Lane: "L01", At: time.Now().UTC(), Version: "1.0", State: "IDLE", Devices: map[string]bool{"scanner": true}, Backlog: 3}
	if _, err := ParseHeartbeat(encode(t, hb), "L01"); err != nil {
		t.Fatal(err)
	}
	if _, err := ParseHeartbeat(encode(t, hb), "L02"); !errors.Is(err, ErrWrongLane) {
		t.Fatalf("other lane: %v", err)
	}
	hb.Backlog = -1
	if _, err := ParseHeartbeat(encode(t, hb), "L01"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("negative backlog: %v", err)
	}
	if _, err := ParseHeartbeat([]byte(`{"v":3}`), "L01"); !errors.Is(err, ErrVersion) {
		t.Fatalf("version: %v", err)
	}
}

// FuzzParse: no input crashes the parser, and whatever it accepts is valid
// and encodes back to an event that parses the same.
func FuzzParse(f *testing.F) {
	f.Add(encode(f, good()), "L01")
	e := good()
	e.Kind, e.Refund = KindRefund, &Refund{MchRefundNo: "L01R1", Amount: 100, State: "DONE", CreatedAt: e.At, UpdatedAt: e.At}
	f.Add(encode(f, e), "L01")
	f.Add([]byte(`{"v":1}`), "")
	f.Add([]byte(`{"v":2,"lane":"L01"}`), "L01")
	f.Add([]byte(`[]`), "")
	f.Add([]byte(`{"v":1,"lane":"L01","seq":1,"kind":"order","at":"2026-01-01T00:00:00Z","order":{}}`), "L01")
	f.Fuzz(func(t *testing.T, data []byte, lane string) {
		e, err := Parse(data, lane)
		if err != nil {
			return
		}
		if e.Validate() != nil || (lane != "" && e.Lane != lane) {
			t.Fatalf("accepted an invalid event: %+v", e)
		}
		again, err := Parse(encode(t, e), lane)
		if err != nil || again.Seq != e.Seq || again.Order != e.Order {
			t.Fatalf("round trip: %v", err)
		}
		_, _ = ParseHeartbeat(data, lane)
	})
}
