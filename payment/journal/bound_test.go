package journal

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The newest order is the one with the highest sequence, even when the
// clock went back a day between two orders (a Pi without a clock battery).
func TestNewestBySequenceNotClock(t *testing.T) {
	ctx := context.Background()
	clock := time.Date(2026, 11, 29, 12, 0, 0, 0, time.UTC)
	j, _ := openTemp(t, Options{Now: func() time.Time { return clock }})
	first, _ := j.AddOrder(ctx, newOrder("a", 100), num)
	j.Transition(ctx, first.MchOrderNo, StateSubmitting, StatePaid, Update{Status: 2})
	clock = clock.Add(-24 * time.Hour) // NTP corrected the clock backwards
	second, _ := j.AddOrder(ctx, newOrder("b", 200), num)
	j.Transition(ctx, second.MchOrderNo, StateSubmitting, StatePaid, Update{Status: 2})
	if second.Seq <= first.Seq {
		t.Fatalf("sequence did not grow: %d then %d", first.Seq, second.Seq)
	}
	if last, err := j.LastByRef(ctx, "REF1"); err != nil || last.MchOrderNo != second.MchOrderNo {
		t.Fatalf("LastByRef picked %s (%v), want the newer %s", last.MchOrderNo, err, second.MchOrderNo)
	}
	if last, err := j.LastPaid(ctx); err != nil || last.MchOrderNo != second.MchOrderNo {
		t.Fatalf("LastPaid picked %s (%v), want %s", last.MchOrderNo, err, second.MchOrderNo)
	}
}

func TestRefundBoundCannotOverflow(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	rnum := func(c uint64) string { return fmt.Sprintf("R-%d", c) }
	o, _ := j.AddOrder(ctx, newOrder("h", 1000), num)
	j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2})
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 600}, rnum); err != nil {
		t.Fatal(err)
	}
	// 600 + MaxInt64 overflows to a negative sum that is "≤ 1000".
	for _, amount := range []int64{math.MaxInt64, math.MaxInt64 - 599, 401} {
		if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: amount}, rnum); !errors.Is(err, ErrRefundTooLarge) {
			t.Fatalf("refund of %d accepted: %v", amount, err)
		}
	}
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 400}, rnum); err != nil {
		t.Fatalf("the exact rest must be refundable: %v", err)
	}
}

func TestSettleOnlyUnknownRefunds(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	rnum := func(c uint64) string { return fmt.Sprintf("R-%d", c) }
	o, _ := j.AddOrder(ctx, newOrder("h", 1000), num)
	j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2})
	sent, _ := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 100}, rnum)
	if _, err := j.SettleRefund(ctx, sent.MchRefundNo, true, "by hand"); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("a SENT refund (in flight) was settled by hand: %v", err)
	}
	j.FinishRefund(ctx, sent.MchRefundNo, RefundDone, "")
	if _, err := j.SettleRefund(ctx, sent.MchRefundNo, false, "by hand"); !errors.Is(err, ErrStateChanged) {
		t.Fatalf("a DONE refund was settled again: %v", err)
	}
	lost, _ := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 200}, rnum)
	j.FinishRefund(ctx, lost.MchRefundNo, RefundUnknown, "reply lost")
	r, err := j.SettleRefund(ctx, lost.MchRefundNo, true, "checked in the portal")
	if err != nil || r.State != RefundDone {
		t.Fatalf("UNKNOWN refund not settled: %+v %v", r, err)
	}
	if got, _ := j.Get(ctx, o.MchOrderNo); got.Refunded != 300 {
		t.Fatalf("refunded %d, want 300", got.Refunded)
	}
}

// A register refund is a retry candidate for the same reference and
// amount until the register takes its answer; an operator's refund never is.
func TestECRRefundLookup(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	rnum := func(c uint64) string { return fmt.Sprintf("R-%d", c) }
	o, _ := j.AddOrder(ctx, newOrder("h", 1000), num)
	j.Transition(ctx, o.MchOrderNo, StateSubmitting, StatePaid, Update{PayOrderID: "AM1", Status: 2})
	if _, err := j.RecentECRRefund(ctx, "INV7", 300, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("no refund yet: %v", err)
	}
	j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 300, Source: RefundByOperator, ECRRef: "INV7"}, rnum)
	if _, err := j.RecentECRRefund(ctx, "INV7", 300, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("an operator's refund is not the register's: %v", err)
	}
	r, _ := j.AddRefund(ctx, NewRefund{OrderNo: o.MchOrderNo, Amount: 300, Source: RefundByECR, ECRRef: "INV7"}, rnum)
	got, err := j.RecentECRRefund(ctx, "INV7", 300, time.Time{})
	if err != nil || got.MchRefundNo != r.MchRefundNo || got.ECRRef != "INV7" || got.State != RefundSent || got.Taken {
		t.Fatalf("lookup %+v %v", got, err)
	}
	if _, err := j.RecentECRRefund(ctx, "INV7", 301, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another amount matched: %v", err)
	}
	if _, err := j.RecentECRRefund(ctx, "INV7", 300, time.Now().Add(time.Hour)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refund before since matched: %v", err)
	}
	if err := j.MarkRefundTaken(ctx, r.MchRefundNo); err != nil {
		t.Fatal(err)
	}
	if _, err := j.RecentECRRefund(ctx, "INV7", 300, time.Time{}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a refund whose answer the register took is still a retry candidate: %v", err)
	}
	if rs, _ := j.Refunds(ctx, o.MchOrderNo); len(rs) != 2 || !rs[1].Taken {
		t.Fatalf("refunds %+v", rs)
	}
	if err := j.MarkRefundTaken(ctx, "NOPE"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown refund: %v", err)
	}
}

// schemaV1 is the first released schema, to prove the upgrade.
const schemaV1 = `
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE orders (
	mch_order_no TEXT PRIMARY KEY, terminal_id TEXT NOT NULL, amount INTEGER NOT NULL CHECK (amount > 0),
	currency TEXT NOT NULL, channel TEXT NOT NULL, code_masked TEXT NOT NULL, code_hash TEXT NOT NULL UNIQUE,
	source TEXT NOT NULL, ecr_ref TEXT NOT NULL DEFAULT '', pos_number TEXT NOT NULL DEFAULT '', state TEXT NOT NULL,
	pay_order_id TEXT NOT NULL DEFAULT '', status INTEGER NOT NULL DEFAULT -1, message TEXT NOT NULL DEFAULT '',
	not_sent INTEGER NOT NULL DEFAULT 0, refunded INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX orders_state ON orders(state);
CREATE INDEX orders_created ON orders(created_at);
CREATE INDEX orders_ref ON orders(ecr_ref, created_at);
CREATE TABLE transitions (id INTEGER PRIMARY KEY AUTOINCREMENT, mch_order_no TEXT NOT NULL REFERENCES orders(mch_order_no),
	at INTEGER NOT NULL, from_state TEXT NOT NULL, to_state TEXT NOT NULL, status INTEGER NOT NULL DEFAULT -1, detail TEXT NOT NULL DEFAULT '');
CREATE INDEX transitions_order ON transitions(mch_order_no, id);
CREATE TABLE refunds (mch_refund_no TEXT PRIMARY KEY, mch_order_no TEXT NOT NULL REFERENCES orders(mch_order_no),
	amount INTEGER NOT NULL CHECK (amount > 0), state TEXT NOT NULL, message TEXT NOT NULL DEFAULT '',
	created_at INTEGER NOT NULL, updated_at INTEGER NOT NULL);
CREATE INDEX refunds_order ON refunds(mch_order_no);
INSERT INTO meta VALUES ('schema_version','1'),('order_counter','2'),('refund_counter','0'),('code_secret','00112233445566778899aabbccddeeff');
INSERT INTO orders VALUES ('L01-00000001-AAAAA','L01',100,'CAD','WX_MICROPAY','13****6789','h1','ecr','INV1','01','PAID','AM1',2,'',0,0,2000,2000);
INSERT INTO orders VALUES ('L01-00000002-BBBBB','L01',200,'CAD','WX_MICROPAY','13****6780','h2','ecr','INV1','01','PAID','AM2',2,'',0,0,1000,1000);
`

// schemaV1Journal writes a journal of schema version 1 (schemaV1) at path
// and returns it open.
func schemaV1Journal(t *testing.T, path string) *sql.DB {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=journal_mode(WAL)")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := db.Exec(schemaV1); err != nil {
		db.Close()
		t.Fatal(err)
	}
	return db
}

// tempV1Journal is a closed schemaV1Journal in a temporary directory.
func tempV1Journal(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "journal.db")
	schemaV1Journal(t, path).Close()
	return path
}

func TestMigrateFromV1(t *testing.T) {
	ctx := context.Background()
	path := tempV1Journal(t)
	if _, err := Open(path, Options{ReadOnly: true}); err == nil || !strings.Contains(err.Error(), "upgrade") {
		t.Fatalf("a read-only open must not migrate and must say why: %v", err)
	}
	j, err := Open(path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer j.Close()
	var v string
	j.db.QueryRow(`SELECT value FROM meta WHERE key='schema_version'`).Scan(&v)
	if v != fmt.Sprint(SchemaVersion) {
		t.Fatalf("schema version %s after upgrade", v)
	}
	// The second order was written later (higher rowid) though its clock
	// stamp is earlier: the sequence keeps the write order.
	last, err := j.LastByRef(ctx, "INV1")
	if err != nil || last.MchOrderNo != "L01-00000002-BBBBB" || last.Seq != 2 {
		t.Fatalf("LastByRef after upgrade: %+v %v", last, err)
	}
	o, err := j.AddOrder(ctx, newOrder("h3", 300), num)
	if err != nil || o.Seq != 3 {
		t.Fatalf("new order after upgrade: %+v %v", o, err)
	}
	if _, err := j.AddRefund(ctx, NewRefund{OrderNo: last.MchOrderNo, Amount: 50, Source: RefundByECR, ECRRef: "INV1"}, func(c uint64) string { return fmt.Sprint("R", c) }); err != nil {
		t.Fatal(err)
	}
	// An upgraded journal keeps code_hash UNIQUE on the column (new ones
	// have a partial index): armed orders without a code live side by
	// side, and a used code is refused the same way.
	a1, err1 := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 400, Currency: "CAD", Source: "keypad"}, num)
	a2, err2 := j.ArmOrder(ctx, Armed{TerminalID: "L01", Amount: 500, Currency: "CAD", Source: "keypad"}, num)
	if err1 != nil || err2 != nil {
		t.Fatalf("arming after upgrade: %v %v", err1, err2)
	}
	if _, err := j.AttachCode(ctx, a1.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****6789", CodeHash: "h1"}); !errors.Is(err, ErrCodeUsed) {
		t.Fatalf("a used code attached after upgrade: %v", err)
	}
	if _, err := j.AttachCode(ctx, a2.MchOrderNo, Code{Channel: "WX_MICROPAY", CodeMasked: "13****6781", CodeHash: "h9"}); err != nil {
		t.Fatalf("a new code after upgrade: %v", err)
	}
}

// A journal another process holds is reported as locked, never as damaged
// (which would send the technician to restore a backup).
func TestLockedJournalIsNotDamaged(t *testing.T) {
	j, path := openTemp(t, Options{})
	j.Close()
	holder, err := sql.Open("sqlite", "file:"+path+"?_pragma=locking_mode(EXCLUSIVE)")
	if err != nil {
		t.Fatal(err)
	}
	defer holder.Close()
	holder.SetMaxOpenConns(1)
	if _, err := holder.Exec(`BEGIN EXCLUSIVE; UPDATE meta SET value = value WHERE key = 'order_counter'`); err != nil {
		t.Fatal(err)
	}
	defer holder.Exec(`ROLLBACK`)
	_, err = Open(path, Options{ReadOnly: true})
	if err == nil {
		t.Fatal("opened a journal held exclusively by another process")
	}
	if !errors.Is(err, ErrLocked) || strings.Contains(err.Error(), "damaged") {
		t.Fatalf("want a locked error, got: %v", err)
	}
}

// MarkTaken is seen by every later read, from this process or another,
// survives reopening, and names only existing orders.
func TestMarkTaken(t *testing.T) {
	ctx := context.Background()
	path := filepath.Join(t.TempDir(), "journal.db")
	j, err := Open(path, Options{Exclusive: true})
	if err != nil {
		t.Fatal(err)
	}
	o, err := j.AddOrder(ctx, newOrder("h1", 100), num)
	if err != nil {
		t.Fatal(err)
	}
	if o.Taken {
		t.Fatal("a new order is taken")
	}
	fsyncs := walSyncs(j)
	if err := j.MarkTaken(ctx, o.MchOrderNo); err != nil {
		t.Fatal(err)
	}
	// The mark is durable before MarkTaken returns.
	if walSyncs(j) != fsyncs+1 || j.Unsynced() {
		t.Fatalf("MarkTaken made %d fsyncs (unsynced %v), want 1", walSyncs(j)-fsyncs, j.Unsynced())
	}
	if err := j.MarkTaken(ctx, "NOPE"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("unknown order: %v", err)
	}
	if got, err := j.Get(ctx, o.MchOrderNo); err != nil || !got.Taken {
		t.Fatalf("%+v %v", got, err)
	}
	// A later write on the main connection keeps the mark.
	if _, err := j.Transition(ctx, o.MchOrderNo, o.State, StatePaid, Update{Status: 2}); err != nil {
		t.Fatal(err)
	}
	if err := j.Close(); err != nil {
		t.Fatal(err)
	}
	if err := j.MarkTaken(ctx, o.MchOrderNo); err == nil {
		t.Fatal("MarkTaken after Close")
	}
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	if got, err := ro.Get(ctx, o.MchOrderNo); err != nil || !got.Taken || got.State != StatePaid {
		t.Fatalf("after reopening: %+v %v", got, err)
	}
	if err := ro.MarkTaken(ctx, o.MchOrderNo); err == nil {
		t.Fatal("a read-only journal took a mark")
	}
}

// LastByRefAmount finds the newest order with the reference for that
// amount, past a newer one under the same reference for another amount.
func TestLastByRefAmount(t *testing.T) {
	ctx := context.Background()
	j, _ := openTemp(t, Options{})
	add := func(hash string, amount int64) Order {
		n := newOrder(hash, amount)
		n.ECRRef = "INV1"
		o, err := j.AddOrder(ctx, n, num)
		if err != nil {
			t.Fatal(err)
		}
		return o
	}
	first := add("h1", 2000)
	add("h2", 1500)
	if o, err := j.LastByRefAmount(ctx, "INV1", 2000); err != nil || o.MchOrderNo != first.MchOrderNo {
		t.Fatalf("%+v %v", o, err)
	}
	if _, err := j.LastByRefAmount(ctx, "INV1", 999); !errors.Is(err, ErrNotFound) {
		t.Fatalf("another amount: %v", err)
	}
	blank := newOrder("h3", 2000)
	blank.ECRRef = ""
	if _, err := j.AddOrder(ctx, blank, num); err != nil {
		t.Fatal(err)
	}
	if _, err := j.LastByRefAmount(ctx, "", 2000); !errors.Is(err, ErrNotFound) {
		t.Fatalf("a blank reference names nothing: %v", err)
	}
}

// One daemon at a time runs a lane on a journal; operator commands still
// open it, and the lock goes with the daemon however it ends.
func TestExclusiveLane(t *testing.T) {
	path := filepath.Join(t.TempDir(), "journal.db")
	first, err := Open(path, Options{Exclusive: true, TrackCleanStop: true})
	if err != nil {
		t.Fatal(err)
	}
	if second, err := Open(path, Options{Exclusive: true, TrackCleanStop: true}); !errors.Is(err, ErrLocked) || !strings.Contains(err.Error(), "another scanpay") {
		if second != nil {
			second.Close()
		}
		t.Fatalf("a second lane opened the journal: %v", err)
	}
	op, err := Open(path, Options{})
	if err != nil {
		t.Fatalf("an operator command could not open a journal a lane runs on: %v", err)
	}
	op.Close()
	ro, err := Open(path, Options{ReadOnly: true})
	if err != nil {
		t.Fatalf("a report could not open a journal a lane runs on: %v", err)
	}
	ro.Close()
	if err := first.Close(); err != nil {
		t.Fatal(err)
	}
	again, err := Open(path, Options{Exclusive: true, TrackCleanStop: true})
	if err != nil {
		t.Fatalf("the lock outlived the lane that held it: %v", err)
	}
	again.Close()
}
