package payment_test

import (
	"context"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpaysim"
	"github.com/scanpay/scanpay/payment/journal"
)

// snapJournal copies the journal's files after every synced commit the
// lane makes (an arm, a synced settle): what a power cut at any moment
// before the next fsync leaves on disk, since everything written since
// (the code's link, an outcome settled without fsync) was written without
// fsync of its own.
type snapJournal struct {
	payment.Journal
	t     *testing.T
	path  string
	mu    sync.Mutex // snaps is appended by the lane, read by the test
	snaps []string
}

func (s *snapJournal) ArmOrder(ctx context.Context, a journal.Armed, num func(uint64) string) (journal.Order, error) {
	o, err := s.Journal.ArmOrder(ctx, a, num)
	if err == nil {
		s.snapshot()
	}
	return o, err
}

func (s *snapJournal) Transition(ctx context.Context, no string, from, to journal.State, u journal.Update) (journal.Order, error) {
	o, err := s.Journal.Transition(ctx, no, from, to, u)
	if err == nil {
		s.snapshot()
	}
	return o, err
}

func (s *snapJournal) snapshot() {
	dir := s.t.TempDir()
	for _, f := range []string{s.path, s.path + "-wal", journal.SecretPath(s.path)} {
		b, rerr := os.ReadFile(f)
		if rerr != nil {
			s.t.Errorf("snapshot %s: %v", f, rerr)
			continue
		}
		if werr := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o600); werr != nil {
			s.t.Error(werr)
		}
	}
	s.mu.Lock()
	s.snaps = append(s.snaps, dir)
	s.mu.Unlock()
}

// taken is how many snapshots exist now.
func (s *snapJournal) taken() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.snaps)
}

// restore puts snapshot i back as the journal's files: the power cut.
func (s *snapJournal) restore(i int) {
	s.t.Helper()
	s.mu.Lock()
	dir := s.snaps[i]
	s.mu.Unlock()
	os.Remove(s.path + "-shm")
	for _, f := range []string{s.path, s.path + "-wal", journal.SecretPath(s.path)} {
		b, err := os.ReadFile(filepath.Join(dir, filepath.Base(f)))
		if err != nil {
			s.t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			s.t.Fatal(err)
		}
	}
}

// ecrSaleNow runs a register sale of amount with reference ref and returns
// its result the moment it is announced (before its commit).
func ecrSaleNow(h *harness, amount int64, ref string) payment.SaleResult {
	h.t.Helper()
	ctx := context.Background()
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: ref}); err != nil {
		h.t.Fatal(err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: h.code()}); err != nil {
		h.t.Fatal(err)
	}
	return h.resultNow()
}

// onDisk reads order no from the journal's files, as the next boot would.
func onDisk(t *testing.T, path, no string) (journal.Order, error) {
	t.Helper()
	ro, err := journal.Open(path, journal.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer ro.Close()
	return ro.Get(context.Background(), no)
}

// A power cut after a sale was shown and answered approved, before any
// fsync covered its code's link and outcome: the next boot finds the order
// armed, asks the gateway, and settles it paid, the answer the customer
// and the register already had; the register asking again hears it.
func TestPowerCutAfterUnsyncedOutcome(t *testing.T) {
	var snap *snapJournal
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal {
		snap = &snapJournal{Journal: j, t: t}
		return snap
	}))
	snap.path = h.jpath
	h.ready()
	ctx := context.Background()
	r := ecrSaleNow(h, 1234, "CUT1")
	if r.Outcome != payment.OutcomeApproved {
		t.Fatalf("sale: %+v", r)
	}
	if err := h.term.Settled(ctx); err != nil {
		t.Fatal(err)
	}
	if o := h.order(r.MchOrderNo); o.State != journal.StatePaid {
		t.Fatalf("before the cut the journal reads %s", o.State)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	// The power cut: the disk holds what the arm's fsync made durable.
	if n := snap.taken(); n != 1 {
		t.Fatalf("%d snapshots", n)
	}
	snap.restore(0)
	if o, err := onDisk(t, h.jpath, r.MchOrderNo); err != nil || o.State != journal.StateArmed {
		t.Fatalf("after the cut the order reads %s (%v), want ARMED: the code's link and the outcome had no fsync", o.State, err)
	}
	h.wrapJ = nil
	h.start()
	h.ready()
	h.eventually("the armed order settled paid", func() bool { return h.order(r.MchOrderNo).State == journal.StatePaid })
	if res, err := h.term.LastResult(ctx, "CUT1"); err != nil || res.Outcome != payment.OutcomeApproved || !res.Final || res.MchOrderNo != r.MchOrderNo {
		t.Fatalf("the register asking again: %+v %v", res, err)
	}
	if o := h.order(r.MchOrderNo); o.Refunded != 0 {
		t.Fatalf("a paid sale was refunded: %+v", o)
	}
	h.agree()
}

// A power cut the moment a sale was shown and answered "not confirmed"
// (the gateway still said "paying" when polling ran out), before any later
// fsync: the customer, told the sale did not go through, finished paying
// on the phone meanwhile. "Not confirmed" was the lane's own verdict, not
// the gateway's, so it must already be on disk: found ARMED or SUBMITTING,
// recovery would ask, hear "paid" and settle it PAID, a second payment
// neither refunded nor held for the operator. On disk UNCONFIRMED, the
// reconciler finds the payment late and refunds it (refund_late).
func TestPowerCutAfterNotConfirmed(t *testing.T) {
	var snap *snapJournal
	h := newHarness(t, withConfig(func(c *payment.Config) { c.RefundLate = true }), withJournal(func(j payment.Journal) payment.Journal {
		snap = &snapJournal{Journal: j, t: t}
		return snap
	}))
	snap.path = h.jpath
	h.ready()
	ctx := context.Background()
	// 1054: the simulator leaves the order paying, and pays it 90 s after
	// it was created (scenario 54).
	r := ecrSaleNow(h, 1054, "CUT2")
	cut := snap.taken() // every fsync the answer came after
	if r.Outcome != payment.OutcomeUnknown {
		t.Fatalf("sale: %+v", r)
	}
	if err := h.stop(); err != nil {
		t.Fatal(err)
	}
	snap.restore(cut - 1)
	if o, err := onDisk(t, h.jpath, r.MchOrderNo); err != nil || o.State != journal.StateUnconfirmed {
		t.Fatalf("after the cut the order reads %s (%v): \"not confirmed\" was answered before it was durable", o.State, err)
	}
	h.clock.Advance(iotpaysim.LatePayAfter + time.Second) // the customer pays on the phone
	h.wrapJ = nil
	h.start()
	h.ready()
	h.eventually("the late payment refunded", func() bool {
		o := h.order(r.MchOrderNo)
		return o.State == journal.StateLatePaid && o.Refunded == o.Amount
	})
	if h.rec.sawScreen(payment.ScreenApproved) {
		t.Fatal("the recovered order was shown approved")
	}
	if res, err := h.term.LastResult(ctx, "CUT2"); err != nil || res.Outcome == payment.OutcomeApproved {
		t.Fatalf("the register asking again: %+v %v", res, err)
	}
	h.agree()
}

// settleFirst stands in for an operator's `scanpay query` that settles an
// armed order paid in the moment between its create_order leaving and the
// lane's commit of the code's link.
type settleFirst struct {
	payment.Journal
	t    *testing.T
	path string
}

func (s *settleFirst) AttachCode(ctx context.Context, no string, c journal.Code) (journal.Order, error) {
	other, err := journal.Open(s.path, journal.Options{})
	if err != nil {
		s.t.Error(err)
	} else {
		if _, err := other.Transition(ctx, no, journal.StateArmed, journal.StatePaid, journal.Update{PayOrderID: "AM-OPERATOR", Status: 2}); err != nil {
			s.t.Error(err)
		}
		other.Close()
	}
	return s.Journal.AttachCode(ctx, no, c)
}

// The lane meets the operator's write as a conflict (the journal is the
// truth both wrote by the same rule), not as a storage failure: it
// announces what the journal says and takes the next sale, where it used
// to stop the daemon out of service.
func TestOperatorSettlesWhileCodeFlies(t *testing.T) {
	var race *settleFirst
	h := newHarness(t, withJournal(func(j payment.Journal) payment.Journal {
		race = &settleFirst{Journal: j, t: t}
		return race
	}))
	race.path = h.jpath
	h.ready()
	ctx := context.Background()
	r := ecrSaleNow(h, 800, "OP1")
	if r.Outcome != payment.OutcomeApproved || r.PayOrderID != "AM-OPERATOR" {
		t.Fatalf("the sale an operator settled meanwhile: %+v", r)
	}
	h.eventually("the lane idle again", func() bool { return h.term.State() == payment.StateIdle })
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 900}); err != nil {
		t.Fatalf("the next sale: %v", err)
	}
}
