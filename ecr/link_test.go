package ecr_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/scanpay/scanpay/device"
	"github.com/scanpay/scanpay/device/devicetest"
	"github.com/scanpay/scanpay/device/serial"
	"github.com/scanpay/scanpay/device/serial/serialtest"
	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/ecr/ecrtest"
	"github.com/scanpay/scanpay/payment"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stubTerm is a call-recording terminal with a journal of results by
// reference, as the engine keeps them.
type stubTerm struct {
	mu         sync.Mutex
	state      payment.State
	sales      []payment.SaleRequest
	saleErr    error
	refunds    []payment.ECRRefund
	refund     payment.SaleResult
	journal    map[string]payment.SaleResult
	older      map[string]payment.SaleResult // an earlier sale under a reused reference
	journalErr error
	seq        uint64
	block      chan struct{} // RefundForECR waits for it, as for a slow gateway
	// takenRefunds are the refunds whose answers the link noted taken.
	takenRefunds []string
}

func (s *stubTerm) RequestSale(_ context.Context, r payment.SaleRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sales = append(s.sales, r)
	return s.saleErr
}

func (s *stubTerm) RefundForECR(_ context.Context, req payment.ECRRefund) payment.SaleResult {
	s.mu.Lock()
	block := s.block
	s.mu.Unlock()
	if block != nil {
		<-block
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refunds = append(s.refunds, req)
	r := s.refund
	r.Request = payment.SaleRequest{Amount: req.Amount, Source: payment.SourceECR, ECRRef: req.Ref}
	return r
}

func (s *stubTerm) Taken(_ context.Context, taken payment.SaleResult) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if taken.RefundNo != "" {
		s.takenRefunds = append(s.takenRefunds, taken.RefundNo)
		return
	}
	for ref, r := range s.journal {
		if r.MchOrderNo == taken.MchOrderNo {
			r.Taken = true
			s.journal[ref] = r
		}
	}
}

// LastResultFor finds an older sale under a reused reference in older,
// else the newest with the reference if its amount matches.
func (s *stubTerm) LastResultFor(ctx context.Context, ref string, amount int64) (payment.SaleResult, error) {
	s.mu.Lock()
	if r, ok := s.older[ref]; ok && r.Request.Amount == amount {
		s.mu.Unlock()
		return r, nil
	}
	s.mu.Unlock()
	r, err := s.LastResult(ctx, ref)
	if err == nil && r.Request.Amount != amount {
		return payment.SaleResult{}, payment.ErrNoOrder
	}
	return r, err
}

func (s *stubTerm) LastResult(_ context.Context, ref string) (payment.SaleResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.journalErr != nil {
		return payment.SaleResult{}, s.journalErr
	}
	r, ok := s.journal[ref]
	if !ok {
		return payment.SaleResult{}, payment.ErrNoOrder
	}
	return r, nil
}

// settle journals a sale's outcome as the engine does, and returns the
// result the engine hands the link.
func (s *stubTerm) settle(sale payment.SaleRequest, outcome payment.Outcome) payment.SaleResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.seq++
	r := payment.SaleResult{Request: sale, Outcome: outcome, Final: true, At: time.Now(), Seq: s.seq,
		MchOrderNo: fmt.Sprintf("T01-%08d-ABCDE", s.seq)}
	if outcome == payment.OutcomeApproved {
		r.Channel, r.PayOrderID = "WX_MICROPAY", "AM20261127153000123456789012"
	}
	if sale.ECRRef != "" {
		if s.journal == nil {
			s.journal = map[string]payment.SaleResult{}
		}
		s.journal[sale.ECRRef] = r
	}
	return r
}

func (s *stubTerm) State() payment.State {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.state
}

func (s *stubTerm) count() (sales, refunds int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.sales), len(s.refunds)
}

func (s *stubTerm) lastSale() payment.SaleRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.sales) == 0 {
		return payment.SaleRequest{}
	}
	return s.sales[len(s.sales)-1]
}

// rig runs a link on the tty end of a pty; the test plays the register on
// the master end.
type rig struct {
	t    *testing.T
	term *stubTerm
	link *ecr.Link
	reg  *ecrtest.Register
	m    *os.File
	logs *observer.ObservedLogs // the link's log, to wait on what it did
}

func newRig(t *testing.T, cfg ecr.Config, port serial.PortConfig) *rig {
	t.Helper()
	dev := serialtest.NewPort(t, t.TempDir(), "ecr")
	m := dev.Master()
	port.Path = dev.Link
	term := &stubTerm{state: payment.StateIdle}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	seen, logs := observer.New(zap.InfoLevel)
	cfg.Logger = zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), seen))
	if cfg.Currency == "" {
		cfg.Currency = "CAD"
	}
	l := ecr.NewLink(cfg, term)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	up := make(upSignal, 1)
	go func() {
		done <- l.RunSerial(ctx, port, device.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond}, up)
	}()
	// Until the link has the port in raw mode the tty would echo.
	select {
	case <-up:
	case <-time.After(3 * time.Second):
		t.Fatal("link never opened the port")
	}
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return &rig{t: t, term: term, link: l, reg: &ecrtest.Register{Conn: m, Timeout: time.Second}, m: m, logs: logs}
}

type upSignal chan struct{}

func (u upSignal) DeviceUp(_ string, up bool) {
	if up {
		select {
		case u <- struct{}{}:
		default:
		}
	}
}

var port8N1 = serial.PortConfig{Baud: 9600, DataBits: 8, Parity: "none"}

func req(amount int64, full, immediate bool, private string) ecr.Request {
	return ecr.Request{POS: "01", Amount: amount, FullAnswer: full, Mode: '1', Type: ecr.TypePurchase, Currency: "124", Private: padRef(private), Immediate: immediate}
}

func padRef(s string) string { return (s + "          ")[:10] }

func (r *rig) waitSale() payment.SaleRequest {
	r.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		r.term.mu.Lock()
		n := len(r.term.sales)
		r.term.mu.Unlock()
		if n > 0 {
			return r.term.lastSale()
		}
		if time.Now().After(deadline) {
			r.t.Fatal("no sale reached the terminal")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// waitSales waits until the terminal has seen n sales and returns the last.
func (r *rig) waitSales(n int) payment.SaleRequest {
	r.t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if got, _ := r.term.count(); got >= n {
			return r.term.lastSale()
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("%d sales reached the terminal, want %d", func() int { n, _ := r.term.count(); return n }(), n)
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func TestSaleFullAnswerA010(t *testing.T) {
	r := newRig(t, ecr.Config{POSNumber: "01"}, port8N1)
	if err := r.reg.Send(req(2865, true, false, "")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	if sale.Amount != 2865 || sale.Currency != "CAD" || sale.Source != payment.SourceECR || sale.POSNumber != "01" || sale.Ticket == 0 || sale.ECRType != "0" {
		t.Fatalf("sale %+v", sale)
	}
	r.link.Result(r.term.settle(sale, payment.OutcomeApproved))
	res, err := r.reg.Receive(5*time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != ecr.StatusApproved || res.Amount != 2865 || res.POS != "01" || res.Currency != "124" ||
		strings.TrimSpace(res.Report) != "WX AM20261127153000123456789012" || res.Mode != '1' {
		t.Fatalf("result %+v", res)
	}
}

func TestShortAnswerRefused(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	if err := r.reg.Send(req(1051, false, false, "INV0001")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	r.link.Result(r.term.settle(sale, payment.OutcomeRefused))
	res, err := r.reg.Receive(5*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != ecr.StatusRefused || res.Private != "INV0001   " || res.Amount != 1051 || res.Full {
		t.Fatalf("%+v", res)
	}
}

// A011 answers 9 at once; the register gets the outcome by sending the same
// request again, answered from the journal; once it took it, the same
// request is a new sale.
func TestImmediateA011AskedAgain(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	if err := r.reg.Send(req(2865, false, true, "INV77")); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(5*time.Second, false)
	if err != nil || res.Status != ecr.StatusNotVerified || res.Private != "INV77     " {
		t.Fatalf("immediate answer %+v %v", res, err)
	}
	r.link.Result(r.term.settle(r.waitSale(), payment.OutcomeApproved))
	if err := r.reg.Send(req(2865, true, false, "INV77")); err != nil {
		t.Fatal(err)
	}
	res, err = r.reg.Receive(5*time.Second, true)
	if err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("asked again: %+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 1 {
		t.Fatalf("asking again started %d sales", n)
	}
	if err := r.reg.Send(req(2865, true, false, "INV77")); err != nil {
		t.Fatal(err)
	}
	if s := r.waitSales(2); s.ECRRef != "INV77" {
		t.Fatalf("after the register took the result, the same request must be a new sale: %+v", s)
	}
}

// A blank reference is never a re-ask: a result the register did not take
// must not answer the next blank request. (A011 with a blank reference is
// refused outright: TestImmediateBlankReferenceRefused.)
func TestBlankReferenceNeverReasks(t *testing.T) {
	for _, immediate := range []bool{false} {
		t.Run(fmt.Sprintf("immediate=%v", immediate), func(t *testing.T) {
			r := newRig(t, ecr.Config{Timeout: 100 * time.Millisecond}, port8N1)
			if err := r.reg.Send(req(1000, false, immediate, "")); err != nil {
				t.Fatal(err)
			}
			if immediate {
				if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusNotVerified {
					t.Fatalf("immediate answer %+v %v", res, err)
				}
			}
			first := r.waitSales(1)
			r.link.Result(r.term.settle(first, payment.OutcomeApproved))
			if !immediate {
				// The register is away: three ENQs, unanswered.
				for enqs := 0; enqs < 3; {
					b, err := r.reg.NextByte(time.Second)
					if err != nil {
						t.Fatalf("after %d ENQs: %v", enqs, err)
					}
					if b == ecr.ENQ {
						enqs++
					}
				}
				// The link gives up after the last ENQ's timeout; a request
				// sent before would be read as a late answer to it.
				devicetest.WaitFor(t, "the link giving up", func() bool {
					return r.logs.FilterMessage("ECR did not answer ENQ").Len() > 0
				})
			}
			r.reg.Timeout = time.Second
			if err := r.reg.Send(req(2500, false, immediate, "")); err != nil {
				t.Fatal(err)
			}
			second := r.waitSales(2)
			if second.Amount != 2500 || second.Ticket == first.Ticket {
				t.Fatalf("second blank request: %+v", second)
			}
			if immediate {
				res, err := r.reg.Receive(3*time.Second, false)
				if err != nil || res.Status != ecr.StatusNotVerified || res.Amount != 2500 {
					t.Fatalf("the second blank request was answered %+v %v", res, err)
				}
			}
		})
	}
}

// A reference already used for another amount or currency, within the
// window, is refused without charging; the same reference and amount past
// the window is a new sale.
func TestReusedReference(t *testing.T) {
	clock := time.Now()
	var mu sync.Mutex
	const window = 2 * time.Second
	r := newRig(t, ecr.Config{KeepResults: window, Now: func() time.Time { mu.Lock(); defer mu.Unlock(); return clock }}, port8N1)
	if err := r.reg.Send(req(1000, false, false, "INV1")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	made := time.Now()
	r.link.Result(r.term.settle(sale, payment.OutcomeApproved))
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
	// The wall clock jumps a day ahead (NTP): the window runs on the
	// monotonic clock for sales made in this run, so nothing changes.
	mu.Lock()
	clock = clock.Add(24 * time.Hour)
	mu.Unlock()
	for _, c := range []ecr.Request{
		req(50000, false, false, "INV1"), // the audit's 500.00 answered from a 10.00 order
		{POS: "02", Amount: 1000, Mode: '1', Type: ecr.TypePurchase, Currency: "124", Private: padRef("INV1")},  // another POS
		{POS: "01", Amount: 1000, Mode: '1', Type: ecr.TypeAutomatic, Currency: "124", Private: padRef("INV1")}, // another type
	} {
		if err := r.reg.Send(c); err != nil {
			t.Fatal(err)
		}
		res, err := r.reg.Receive(3*time.Second, false)
		if err != nil || res.Status != ecr.StatusRefused || res.Amount != c.Amount {
			t.Fatalf("reused reference %+v answered %+v %v", c, res, err)
		}
	}
	if n, _ := r.term.count(); n != 1 {
		t.Fatalf("a reused reference started a sale (%d sales)", n)
	}
	if time.Since(made) > window {
		t.Skip("the machine is too slow to check inside the window")
	}
	time.Sleep(time.Until(made.Add(window + 100*time.Millisecond)))
	if err := r.reg.Send(req(50000, false, false, "INV1")); err != nil {
		t.Fatal(err)
	}
	if s := r.waitSales(2); s.Amount != 50000 {
		t.Fatalf("after the window the reference is free: %+v", s)
	}
}

// After a restart the link knows a sale only from the journal: its wall
// clock time decides, and a sale stamped in the future (the clock went
// back since) counts as recent.
func TestReaskAfterRestartUsesJournalTime(t *testing.T) {
	now := time.Now()
	r := newRig(t, ecr.Config{KeepResults: 10 * time.Minute, Now: func() time.Time { return now }}, port8N1)
	r.term.mu.Lock()
	r.term.journal = map[string]payment.SaleResult{
		"FUTURE": {Request: payment.SaleRequest{Amount: 1000, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "FUTURE", Source: payment.SourceECR},
			Outcome: payment.OutcomeApproved, Final: true, At: now.Add(24 * time.Hour), MchOrderNo: "T01-9", Channel: "WX_MICROPAY", PayOrderID: "AM9"},
		"OLD": {Request: payment.SaleRequest{Amount: 1000, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "OLD", Source: payment.SourceECR},
			Outcome: payment.OutcomeApproved, Final: true, At: now.Add(-11 * time.Minute), MchOrderNo: "T01-8", Channel: "WX_MICROPAY", PayOrderID: "AM8"},
	}
	r.term.mu.Unlock()
	if err := r.reg.Send(req(1000, false, false, "FUTURE")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
	if err := r.reg.Send(req(1000, false, false, "OLD")); err != nil {
		t.Fatal(err)
	}
	if s := r.waitSale(); s.ECRRef != "OLD" {
		t.Fatalf("a sale older than the window must free its reference: %+v", s)
	}
}

// A journal that cannot be read refuses the request: never a new sale that
// could charge an invoice twice.
func TestJournalErrorRefuses(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	r.term.mu.Lock()
	r.term.journalErr = errors.New("disk I/O error")
	r.term.mu.Unlock()
	if err := r.reg.Send(req(1000, false, false, "INV9")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusRefused {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a sale started without the journal")
	}
}

func TestNAKAndRetransmission(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	r.m.Write([]byte{ecr.ENQ})
	if b, _ := r.reg.NextByte(time.Second); b != ecr.ACK {
		t.Fatalf("ENQ answered %#x", b)
	}
	good := ecr.Frame(req(500, false, false, "R1").Encode())
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0x55
	r.m.Write(bad)
	if b, _ := r.reg.NextByte(time.Second); b != ecr.NAK {
		t.Fatalf("bad LRC answered %#x", b)
	}
	short := ecr.Frame([]byte("0100000500"))
	r.m.Write(short)
	if b, _ := r.reg.NextByte(time.Second); b != ecr.NAK {
		t.Fatalf("wrong length answered %#x", b)
	}
	r.m.Write(append([]byte("noise\x00\xff"), good...))
	if b, _ := r.reg.NextByte(time.Second); b != ecr.ACK {
		t.Fatalf("good frame after noise answered %#x", b)
	}
	r.m.Write([]byte{ecr.EOT})
	if s := r.waitSale(); s.Amount != 500 || s.ECRRef != "R1" {
		t.Fatalf("sale %+v", s)
	}
}

func TestOversizedFrameNAK(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	r.m.Write([]byte{ecr.ENQ})
	r.reg.NextByte(time.Second)
	r.m.Write(append([]byte{ecr.STX}, []byte(strings.Repeat("7", 120))...))
	if b, _ := r.reg.NextByte(time.Second); b != ecr.NAK {
		t.Fatalf("oversized frame answered %#x", b)
	}
}

// A register that misses the result (never answers ENQ) gets it when it
// sends the same request again.
func TestSilentRegisterAsksAgain(t *testing.T) {
	r := newRig(t, ecr.Config{Timeout: 100 * time.Millisecond}, port8N1)
	if err := r.reg.Send(req(2865, true, false, "SILENT")); err != nil {
		t.Fatal(err)
	}
	r.link.Result(r.term.settle(r.waitSale(), payment.OutcomeApproved))
	// The register never answers ENQ: the link tries 3 times, then gives up.
	enqs := 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		b, err := r.reg.NextByte(200 * time.Millisecond)
		if err != nil {
			break
		}
		if b == ecr.ENQ {
			enqs++
		}
	}
	if enqs != 3 {
		t.Fatalf("%d ENQs, want 3", enqs)
	}
	r.reg.Timeout = time.Second
	if err := r.reg.Send(req(2865, true, false, "SILENT")); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(3*time.Second, true)
	if err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("re-asked: %+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 1 {
		t.Fatalf("asking again started a sale (%d)", n)
	}
}

func TestRequestDuringSaleNAK(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	for _, st := range []payment.State{payment.StateAwaitingCode, payment.StatePolling, payment.StateStarting, payment.StateWaitingClock} {
		r.term.mu.Lock()
		r.term.state = st
		r.term.mu.Unlock()
		if err := r.reg.Send(req(100, false, false, "")); !errors.Is(err, ecrtest.ErrRefused) {
			t.Fatalf("request while %s: %v", st, err)
		}
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a sale was started")
	}
}

func TestRefusedRequests(t *testing.T) {
	r := newRig(t, ecr.Config{POSNumber: "01"}, port8N1)
	cases := []ecr.Request{
		{POS: "01", Amount: 100, Mode: '1', Type: ecr.TypePurchase, Currency: "978", Private: padRef("EUR")},
		{POS: "01", Amount: 0, Mode: '1', Type: ecr.TypePurchase, Currency: "124", Private: padRef("ZERO")},
		{POS: "01", Amount: 100, Mode: '1', Type: ecr.TypePurchase, Currency: "840", Private: padRef("USD")},
		{POS: "02", Amount: 100, Mode: 'C', Type: ecr.TypePurchase, Currency: "124", Private: padRef("OTHERPOS")},
		{POS: "01", Amount: 100, Mode: '1', Type: ecr.TypeRefund, Currency: "124", Private: padRef("NOREFUND")},
		{POS: "01", Amount: 100, Mode: '1', Type: ecr.TypeCredit, Currency: "124", Private: padRef("CREDIT")},
	}
	for _, c := range cases {
		if err := r.reg.Send(c); err != nil {
			t.Fatal(err)
		}
		res, err := r.reg.Receive(3*time.Second, false)
		if err != nil {
			t.Fatal(err)
		}
		// Refused, with every field of the request echoed.
		if res.Status != ecr.StatusRefused || res.POS != c.POS || res.Amount != c.Amount || res.Mode != c.Mode || res.Currency != c.Currency || res.Private != c.Private {
			t.Fatalf("%s: %+v", c.Private, res)
		}
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatalf("refused requests started %d sales", n)
	}
	r.term.mu.Lock()
	r.term.saleErr = payment.ErrBadAmount
	r.term.mu.Unlock()
	r.reg.Send(req(999999, false, false, "TOOBIG"))
	if res, _ := r.reg.Receive(3*time.Second, false); res.Status != ecr.StatusRefused {
		t.Fatalf("engine refusal not passed on: %+v", res)
	}
}

func TestRefundFromRegister(t *testing.T) {
	r := newRig(t, ecr.Config{AllowRefunds: true}, port8N1)
	r.term.mu.Lock()
	r.term.refund = payment.SaleResult{Outcome: payment.OutcomeApproved, Final: true, Channel: "WX_MICROPAY", PayOrderID: "AM5", MchOrderNo: "T01-5", RefundNo: "T01R5"}
	r.term.mu.Unlock()
	rq := ecr.Request{POS: "01", Amount: 500, FullAnswer: true, Mode: '1', Type: ecr.TypeRefund, Currency: "124", Private: "0000012345"}
	if err := r.reg.Send(rq); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(3*time.Second, true)
	if err != nil || res.Status != ecr.StatusApproved || res.Amount != 500 {
		t.Fatalf("%+v %v", res, err)
	}
	// The refund's answer was taken: noted for the refund (right after
	// the exchange ends), never for the sale it names (the sale's own
	// result may still be asked for).
	devicetest.WaitFor(t, "the refund noted taken", func() bool {
		r.term.mu.Lock()
		defer r.term.mu.Unlock()
		return len(r.term.takenRefunds) > 0
	})
	r.term.mu.Lock()
	defer r.term.mu.Unlock()
	want := payment.ECRRefund{Ref: "0000012345", Amount: 500, Currency: "CAD", POSNumber: "01"}
	if len(r.term.refunds) != 1 || r.term.refunds[0] != want {
		t.Fatalf("refunds %+v, want %+v", r.term.refunds, want)
	}
	if len(r.term.takenRefunds) != 1 || r.term.takenRefunds[0] != "T01R5" {
		t.Fatalf("refunds noted taken: %v", r.term.takenRefunds)
	}
	for _, res := range r.term.journal {
		if res.Taken {
			t.Fatalf("a refund's answer marked its sale taken: %+v", res)
		}
	}
}

func Test7E1Link(t *testing.T) {
	r := newRig(t, ecr.Config{}, serial.PortConfig{Baud: 9600, DataBits: 7, Parity: "even"})
	if err := r.reg.Send(req(1234, false, false, "SEVEN")); err != nil {
		t.Fatal(err)
	}
	r.link.Result(r.term.settle(r.waitSale(), payment.OutcomeApproved))
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
}

// tcpRig runs a link on a loopback listener.
func tcpRig(t *testing.T, cfg ecr.Config) (*ecr.Link, *stubTerm, string) {
	t.Helper()
	term := &stubTerm{state: payment.StateIdle}
	cfg.Currency = "CAD"
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	cfg.Logger = zaptest.NewLogger(t)
	l := ecr.NewLink(cfg, term)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.RunTCP(ctx, ln) }()
	t.Cleanup(func() { cancel(); <-done })
	return l, term, ln.Addr().String()
}

// tcpSale completes one approved sale over a new connection.
func tcpSale(t *testing.T, l *ecr.Link, term *stubTerm, addr string, n int, ref string) {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	reg := &ecrtest.Register{Conn: c, Timeout: time.Second}
	if err := reg.Send(req(2865, true, false, ref)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(3 * time.Second)
	for got, _ := term.count(); got < n; got, _ = term.count() {
		if time.Now().After(deadline) {
			t.Fatal("no sale")
		}
		time.Sleep(2 * time.Millisecond)
	}
	l.Result(term.settle(term.lastSale(), payment.OutcomeApproved))
	if res, err := reg.Receive(3*time.Second, true); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestTCPTransport(t *testing.T) {
	l, term, addr := tcpRig(t, ecr.Config{})
	tcpSale(t, l, term, addr, 1, "TCP1") // one connection after another
	tcpSale(t, l, term, addr, 2, "TCP2")
}

// A register that resets its connection with bytes the link has not read
// must not stop the link from serving the next connection (the audit found
// the link wedged until restart, with /healthz still IDLE). The link reads
// nothing while a refund is at the gateway; the register floods it, then
// resets.
func TestTCPResetWithUnreadBytes(t *testing.T) {
	l, term, addr := tcpRig(t, ecr.Config{AllowRefunds: true})
	release := make(chan struct{})
	term.mu.Lock()
	term.refund = payment.SaleResult{Outcome: payment.OutcomeApproved}
	term.block = release
	term.mu.Unlock()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	reg := &ecrtest.Register{Conn: c, Timeout: time.Second}
	if err := reg.Send(ecr.Request{POS: "01", Amount: 500, Mode: '1', Type: ecr.TypeRefund, Currency: "124", Private: padRef("INV5")}); err != nil {
		t.Fatal(err)
	}
	c.Write([]byte(strings.Repeat("\x7fgarbage", 200)))
	time.Sleep(50 * time.Millisecond)
	c.(*net.TCPConn).SetLinger(0) // RST, not FIN
	c.Close()
	close(release)
	term.mu.Lock()
	term.block = nil
	term.mu.Unlock()
	tcpSale(t, l, term, addr, 1, "AFTER")
	if err := l.Health(); err != nil {
		t.Fatalf("health after the reset: %v", err)
	}
}

// A register that connects and goes silent is replaced by the next one at
// once, and dropped after the idle deadline anyway.
func TestTCPDeadPeerDoesNotBlock(t *testing.T) {
	l, term, addr := tcpRig(t, ecr.Config{IdleTimeout: 200 * time.Millisecond})
	dead, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer dead.Close()
	tcpSale(t, l, term, addr, 1, "NEXT")
	// The idle deadline closes a silent session by itself.
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	idle.SetReadDeadline(time.Now().Add(3 * time.Second))
	if _, err := idle.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a silent register was not dropped: %v", err)
	}
}

func TestTCPAllowFrom(t *testing.T) {
	l, term, addr := tcpRig(t, ecr.Config{AllowFrom: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(3 * time.Second))
	c.Write([]byte{ecr.ENQ})
	if n, err := c.Read(make([]byte, 1)); n != 0 || err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Fatalf("a peer outside allow_from was served: %d %v", n, err)
	}
	if n, _ := term.count(); n != 0 {
		t.Fatal("sale from a refused peer")
	}
	for _, a := range []string{"127.0.0.1:5", "[::1]:5"} {
		tcp, _ := net.ResolveTCPAddr("tcp", a)
		if ecr.NewLink(ecr.Config{}, term).Allowed(tcp) != true {
			t.Errorf("loopback %s refused by default", a)
		}
		if l.Allowed(tcp) {
			t.Errorf("%s allowed outside allow_from", a)
		}
	}
	ten, _ := net.ResolveTCPAddr("tcp", "10.1.2.3:5")
	other, _ := net.ResolveTCPAddr("tcp", "192.168.1.9:5")
	if !l.Allowed(ten) || l.Allowed(other) || ecr.NewLink(ecr.Config{}, term).Allowed(other) {
		t.Error("allow_from networks not applied")
	}
}

func TestAskAgainAnsweredFromJournal(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	now := time.Now()
	r.term.mu.Lock()
	r.term.journal = map[string]payment.SaleResult{
		"PAIDINV": {Request: payment.SaleRequest{Amount: 2865, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "PAIDINV", Source: payment.SourceECR},
			Outcome: payment.OutcomeApproved, Final: true, At: now, MchOrderNo: "T01-1", Channel: "WX_MICROPAY", PayOrderID: "AM1"},
		"OPENINV": {Request: payment.SaleRequest{Amount: 2865, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "OPENINV", Source: payment.SourceECR},
			Outcome: payment.OutcomeUnknown, At: now, MchOrderNo: "T01-2"},
		"DECLINED": {Request: payment.SaleRequest{Amount: 2865, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "DECLINED", Source: payment.SourceECR},
			Outcome: payment.OutcomeRefused, Final: true, At: now, MchOrderNo: "T01-3"},
	}
	r.term.mu.Unlock()
	// An approved invoice asked again gets its result, not a second sale.
	if err := r.reg.Send(req(2865, true, false, "PAIDINV")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, true); err != nil || res.Status != ecr.StatusApproved || strings.TrimSpace(res.Report) != "WX AM1" {
		t.Fatalf("%+v %v", res, err)
	}
	// One not confirmed yet is answered "not verified", not charged again.
	if err := r.reg.Send(req(2865, true, false, "OPENINV")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, true); err != nil || res.Status != ecr.StatusNotVerified {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a second sale was started for an invoice asked again")
	}
	// A declined invoice may be tried again.
	if err := r.reg.Send(req(2865, true, false, "DECLINED")); err != nil {
		t.Fatal(err)
	}
	if s := r.waitSale(); s.ECRRef != "DECLINED" {
		t.Fatalf("%+v", s)
	}
}

// dribbler plays a register that opens an exchange and then sends noise
// forever, one byte inside every byte timeout.
func TestExchangeDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		term := &stubTerm{state: payment.StateIdle}
		l := ecr.NewLink(ecr.Config{Currency: "CAD", Timeout: time.Second}, term)
		linkEnd, regEnd := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- l.Serve(ctx, linkEnd) }()
		reg := &ecrtest.Register{Conn: regEnd, Timeout: time.Second}
		if err := reg.Send(req(1000, false, false, "DRIP")); err != nil {
			t.Fatal(err)
		}
		synctest.Wait()
		sale := term.lastSale()
		// A second exchange that never ends: ENQ, then noise forever.
		sawENQ := make(chan time.Time, 1)
		stopDrip := make(chan struct{})
		regEnd.SetReadDeadline(time.Time{})
		go func() {
			buf := make([]byte, 1)
			for {
				if _, err := regEnd.Read(buf); err != nil {
					return
				}
				if buf[0] == ecr.ENQ {
					select {
					case sawENQ <- time.Now():
					default:
					}
				}
			}
		}()
		go func() {
			regEnd.Write([]byte{ecr.ENQ})
			for {
				select {
				case <-stopDrip:
					return
				case <-time.After(400 * time.Millisecond):
					if _, err := regEnd.Write([]byte{'x'}); err != nil {
						return
					}
				}
			}
		}()
		time.Sleep(2 * time.Second)
		start := time.Now()
		l.Result(term.settle(sale, payment.OutcomeApproved))
		select {
		case at := <-sawENQ:
			if waited := at.Sub(start); waited > l.ExchangeLimit() {
				t.Fatalf("result offered after %v, past the exchange limit %v", waited, l.ExchangeLimit())
			}
		case <-time.After(time.Hour):
			t.Fatal("a register dribbling noise held the link for an hour")
		}
		close(stopDrip)
		cancel()
		regEnd.Close()
		<-done
	})
}

// blockingConn never finishes closing, like a driver stuck in the kernel.
type blockingConn struct {
	net.Conn
	release chan struct{}
	once    sync.Once
}

func (b *blockingConn) Close() error {
	b.once.Do(func() { b.Conn.Close() })
	<-b.release
	return nil
}

func TestHealthReportsAWedgedLink(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		term := &stubTerm{state: payment.StateIdle}
		l := ecr.NewLink(ecr.Config{Currency: "CAD", Timeout: time.Second}, term)
		linkEnd, regEnd := net.Pipe()
		defer regEnd.Close()
		bc := &blockingConn{Conn: linkEnd, release: make(chan struct{})}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- l.Serve(ctx, bc) }()
		synctest.Wait()
		if err := l.Health(); err != nil {
			t.Fatalf("idle link unhealthy: %v", err)
		}
		cancel() // the teardown hangs in Close
		time.Sleep(l.ExchangeLimit())
		if err := l.Health(); err != nil {
			t.Fatalf("unhealthy before its bound: %v", err)
		}
		time.Sleep(10 * time.Second)
		if err := l.Health(); !errors.Is(err, ecr.ErrWedged) {
			t.Fatalf("a wedged link reported healthy: %v", err)
		}
		close(bc.release)
		<-done
		if err := l.Health(); err != nil {
			t.Fatalf("still unhealthy after it recovered: %v", err)
		}
	})
}

// The register took a sale's final result: the link notes it in the
// journal, so after a restart (a new link, nothing in memory) the same
// reference and amount again is a new sale, never that sale's answer — a
// register whose references repeat must not hear "approved" for a sale it
// never charged.
func TestTakenResultSurvivesRestart(t *testing.T) {
	now := time.Now()
	paid := payment.SaleResult{Request: payment.SaleRequest{Amount: 2865, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "INV7", Source: payment.SourceECR},
		Outcome: payment.OutcomeApproved, Final: true, At: now, MchOrderNo: "T01-7", Channel: "WX_MICROPAY", PayOrderID: "AM7"}
	r := newRig(t, ecr.Config{}, port8N1)
	r.term.mu.Lock()
	r.term.journal = map[string]payment.SaleResult{"INV7": paid}
	r.term.mu.Unlock()
	if err := r.reg.Send(req(2865, false, false, "INV7")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
	var taken bool
	for deadline := time.Now().Add(3 * time.Second); !taken && time.Now().Before(deadline); time.Sleep(5 * time.Millisecond) {
		r.term.mu.Lock()
		taken = r.term.journal["INV7"].Taken
		r.term.mu.Unlock()
	}
	if !taken {
		t.Fatal("the link did not note that the register took the result")
	}

	// A restart: a new link, the journal as it was left.
	r2 := newRig(t, ecr.Config{}, port8N1)
	r2.term.mu.Lock()
	r2.term.journal = map[string]payment.SaleResult{"INV7": {Request: paid.Request, Outcome: paid.Outcome, Final: true, At: now,
		MchOrderNo: paid.MchOrderNo, Channel: paid.Channel, PayOrderID: paid.PayOrderID, Taken: true}}
	r2.term.mu.Unlock()
	if err := r2.reg.Send(req(2865, false, false, "INV7")); err != nil {
		t.Fatal(err)
	}
	if s := r2.waitSale(); s.ECRRef != "INV7" || s.Amount != 2865 {
		t.Fatalf("%+v", s)
	}
	// Not taken yet (the register missed it before the restart): answered.
	r3 := newRig(t, ecr.Config{}, port8N1)
	r3.term.mu.Lock()
	r3.term.journal = map[string]payment.SaleResult{"INV7": paid}
	r3.term.mu.Unlock()
	if err := r3.reg.Send(req(2865, false, false, "INV7")); err != nil {
		t.Fatal(err)
	}
	if res, err := r3.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r3.term.count(); n != 0 {
		t.Fatal("a missed result asked again started a sale")
	}
}

// A refund waits on the gateway for as long as the gateway's timeouts
// allow (a refund and a repair query): the link is not wedged meanwhile,
// so the watchdog does not kill the daemon mid-refund.
func TestSlowRefundIsNotWedged(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		term := &stubTerm{state: payment.StateIdle, block: make(chan struct{}),
			refund: payment.SaleResult{Outcome: payment.OutcomeApproved, Final: true, MchOrderNo: "T01-5", RefundNo: "T01R5"}}
		l := ecr.NewLink(ecr.Config{Currency: "CAD", AllowRefunds: true, Timeout: 100 * time.Millisecond}, term)
		linkEnd, regEnd := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error)
		go func() { done <- l.Serve(ctx, linkEnd) }()
		reg := &ecrtest.Register{Conn: regEnd, Timeout: 100 * time.Millisecond}
		if err := reg.Send(ecr.Request{POS: "01", Amount: 500, Mode: '1', Type: ecr.TypeRefund, Currency: "124", Private: "0000012345"}); err != nil {
			t.Fatal(err)
		}
		time.Sleep(l.ExchangeLimit() + 55*time.Second) // the refund is still at the gateway
		if err := l.Health(); err != nil {
			t.Fatalf("a link waiting on a refund reported unhealthy: %v", err)
		}
		got := make(chan ecr.Result, 1)
		go func() {
			res, err := reg.Receive(5*time.Second, false)
			if err != nil {
				t.Error(err)
			}
			got <- res
		}()
		close(term.block)
		if res := <-got; res.Status != ecr.StatusApproved {
			t.Fatalf("%+v", res)
		}
		if err := l.Health(); err != nil {
			t.Fatalf("unhealthy after the refund: %v", err)
		}
		cancel()
		regEnd.Close()
		<-done
	})
}

// A011 with a blank reference is refused before any charge: the register
// would get "not verified" at once and could never ask about the sale.
func TestImmediateBlankReferenceRefused(t *testing.T) {
	r := newRig(t, ecr.Config{}, port8N1)
	if err := r.reg.Send(req(1000, false, true, "")); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(3*time.Second, false)
	if err != nil || res.Status != ecr.StatusRefused {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a sale started")
	}
}

// The register asks again about a sale whose reference was reused since
// for another amount (its counter restarted): the earlier sale, which
// matches the request exactly, answers — never "reference already used",
// which would tell the cashier a paid sale was refused.
func TestAskAgainUnderReusedReference(t *testing.T) {
	now := time.Now()
	r := newRig(t, ecr.Config{}, port8N1)
	r.term.mu.Lock()
	r.term.journal = map[string]payment.SaleResult{
		"INV1": {Request: payment.SaleRequest{Amount: 12215, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "INV1", Source: payment.SourceECR},
			Outcome: payment.OutcomeApproved, Final: true, At: now, MchOrderNo: "T01-6", Channel: "WX_MICROPAY", PayOrderID: "AM6"},
	}
	r.term.older = map[string]payment.SaleResult{
		"INV1": {Request: payment.SaleRequest{Amount: 25817, Currency: "CAD", POSNumber: "01", ECRType: "0", ECRRef: "INV1", Source: payment.SourceECR},
			Outcome: payment.OutcomeApproved, Final: true, At: now.Add(-5 * time.Minute), MchOrderNo: "T01-1", Channel: "WX_MICROPAY", PayOrderID: "AM1"},
	}
	r.term.mu.Unlock()
	if err := r.reg.Send(req(25817, true, false, "INV1")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, true); err != nil || res.Status != ecr.StatusApproved || strings.TrimSpace(res.Report) != "WX AM1" {
		t.Fatalf("%+v %v", res, err)
	}
	// Another amount still conflicts with the newest sale: refused.
	if err := r.reg.Send(req(999, false, false, "INV1")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != ecr.StatusRefused {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a sale started")
	}
}
