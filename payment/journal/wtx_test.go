package journal

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"reflect"
	"strings"
	"testing"
)

// An order read inside a write (the driver's values, orderFromValues) is
// the order database/sql reads (scanOrderRow), field for field, with and
// without a code, and once settled.
func TestOrderFromValuesMatchesScan(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	if n := len(strings.Split(orderCols, ",")); n != orderColCount {
		t.Fatalf("orderCols names %d columns, orderColCount says %d", n, orderColCount)
	}
	armed, err := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "ecr", ECRRef: "INV7", POSNumber: "01", ECRType: "0"}, num)
	if err != nil {
		t.Fatal(err)
	}
	check := func(label string, got Order) {
		t.Helper()
		want, err := j.Get(ctx, got.MchOrderNo)
		if err != nil {
			t.Fatal(err)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%s: read in the write\n %+v\nread by database/sql\n %+v", label, got, want)
		}
	}
	// A move of an order without a code returns its NULL code hash.
	moved, err := j.Transition(ctx, armed.MchOrderNo, StateArmed, StateArmed, Update{Status: -1, Message: "noted"})
	if err != nil {
		t.Fatal(err)
	}
	check("armed", moved)
	attached, err := j.AttachCode(ctx, armed.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****0001", CodeHash: "h1"})
	if err != nil {
		t.Fatal(err)
	}
	check("attached", attached)
	paid, err := j.Settle(ctx, armed.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2, NotSent: true})
	if err != nil {
		t.Fatal(err)
	}
	check("paid", paid)
	interrupted, err := j.Transition(ctx, paid.MchOrderNo, StatePaid, StatePaid, Update{Status: -1, Message: "checked", Interrupted: true})
	if err != nil {
		t.Fatal(err)
	}
	if interrupted.Taken || !interrupted.Interrupted || !interrupted.NotSent {
		t.Fatalf("flags: %+v", interrupted)
	}
	check("interrupted", interrupted)
	if err := j.MarkTaken(ctx, paid.MchOrderNo); err != nil {
		t.Fatal(err)
	}
	noted, err := j.Transition(ctx, paid.MchOrderNo, StatePaid, StatePaid, Update{Status: -1, Message: "again"})
	if err != nil {
		t.Fatal(err)
	}
	if !noted.Taken || !noted.Interrupted {
		t.Fatalf("flags lost: %+v", noted)
	}
	check("taken and interrupted", noted)
}

// A row's values convert as database/sql's Scan converts them, and what
// it refuses is refused.
func TestWriteRowScan(t *testing.T) {
	var s string
	var n int64
	var i int
	var u uint64
	var ns sql.NullString
	var ni sql.NullInt64
	r := &wrow{vals: []driver.Value{"x", int64(7), "12", float64(3), nil, int64(4)}}
	if err := r.Scan(&s, &n, &i, &u, &ns, &ni); err != nil {
		t.Fatal(err)
	}
	if s != "x" || n != 7 || i != 12 || u != 3 || ns.Valid || !ni.Valid || ni.Int64 != 4 {
		t.Fatalf("scanned %q %d %d %d %+v %+v", s, n, i, u, ns, ni)
	}
	for _, bad := range []struct {
		v    driver.Value
		dest any
	}{
		{nil, &s},             // NULL into a string
		{"abc", &n},           // text into an integer
		{float64(1.5), &n},    // a fraction into an integer
		{int64(-1), &u},       // a negative into an unsigned
		{int64(1), new(bool)}, // a destination the journal never reads into
		{[]byte("zz"), &i},    // bytes that are no number
	} {
		if err := (&wrow{vals: []driver.Value{bad.v}}).Scan(bad.dest); err == nil {
			t.Errorf("%#v into %T: no error", bad.v, bad.dest)
		}
	}
	if err := (&wrow{vals: []driver.Value{"a", "b"}}).Scan(&s); err == nil {
		t.Error("two columns into one destination")
	}
	if err := (&wrow{err: sql.ErrNoRows}).Scan(&s); !errors.Is(err, sql.ErrNoRows) {
		t.Errorf("no row: %v", err)
	}
	if _, err := orderFromValues([]driver.Value{"x"}); err == nil {
		t.Error("an order from one column")
	}
}
