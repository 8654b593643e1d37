package payment_test

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/journal"
)

// snapJournal copies the journal's files after every synced commit of an
// arm: what a power cut at any moment before the next fsync leaves on
// disk, since everything written since (the code's link, the outcome) was
// written without fsync of its own.
type snapJournal struct {
	payment.Journal
	t     *testing.T
	path  string
	snaps []string
}

func (s *snapJournal) ArmOrder(ctx context.Context, a journal.Armed, num func(uint64) string) (journal.Order, error) {
	o, err := s.Journal.ArmOrder(ctx, a, num)
	if err == nil {
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
		s.snaps = append(s.snaps, dir)
	}
	return o, err
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
	if err := h.term.RequestSale(ctx, payment.SaleRequest{Amount: 1234, Source: payment.SourceECR, ECRRef: "CUT1"}); err != nil {
		t.Fatal(err)
	}
	if err := h.term.Scan(ctx, payment.Code{Text: h.code()}); err != nil {
		t.Fatal(err)
	}
	r := h.resultNow()
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
	if len(snap.snaps) != 1 {
		t.Fatalf("%d snapshots", len(snap.snaps))
	}
	os.Remove(h.jpath + "-shm")
	for _, f := range []string{h.jpath, h.jpath + "-wal", journal.SecretPath(h.jpath)} {
		b, err := os.ReadFile(filepath.Join(snap.snaps[0], filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(f, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	ro, err := journal.Open(h.jpath, journal.Options{ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	o, err := ro.Get(ctx, r.MchOrderNo)
	ro.Close()
	if err != nil || o.State != journal.StateArmed {
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
