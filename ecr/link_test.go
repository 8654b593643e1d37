package ecr

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/scanner"
	"github.com/scanpay/scanpay/scanner/scannertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// stubTerm is a call-recording terminal.
type stubTerm struct {
	mu      sync.Mutex
	state   payment.State
	sales   []payment.SaleRequest
	saleErr error
	refunds []string
	refund  payment.SaleResult
	journal map[string]payment.SaleResult
}

func (s *stubTerm) RequestSale(_ context.Context, r payment.SaleRequest) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.sales = append(s.sales, r)
	return s.saleErr
}

func (s *stubTerm) RefundForECR(_ context.Context, ref string, amount int64) payment.SaleResult {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.refunds = append(s.refunds, ref)
	r := s.refund
	r.Request = payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: ref}
	return r
}

func (s *stubTerm) LastResult(_ context.Context, ref string) (payment.SaleResult, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	r, ok := s.journal[ref]
	if !ok {
		return payment.SaleResult{}, payment.ErrNoOrder
	}
	return r, nil
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
	link *Link
	reg  *Register
	m    *os.File
}

func newRig(t *testing.T, cfg Config, port scanner.PortConfig) *rig {
	t.Helper()
	dev := scannertest.NewPort(t, t.TempDir(), "ecr")
	m := dev.Master()
	port.Path = dev.Link
	term := &stubTerm{state: payment.StateIdle}
	if cfg.Timeout == 0 {
		cfg.Timeout = 300 * time.Millisecond
	}
	cfg.Logger = zaptest.NewLogger(t)
	if cfg.Currency == "" {
		cfg.Currency = "CAD"
	}
	l := NewLink(cfg, term)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	up := make(upSignal, 1)
	go func() {
		done <- l.RunSerial(ctx, port, scanner.Backoff{Min: 5 * time.Millisecond, Max: 20 * time.Millisecond}, up)
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
	return &rig{t: t, term: term, link: l, reg: &Register{Conn: m, Timeout: time.Second}, m: m}
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

var port8N1 = scanner.PortConfig{Baud: 9600, DataBits: 8, Parity: "none"}

func req(amount int64, full, immediate bool, private string) Request {
	return Request{POS: "01", Amount: amount, FullAnswer: full, Mode: '1', Type: TypePurchase, Currency: "124", Private: padRef(private), Immediate: immediate}
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

func approved(ref string, amount int64) payment.SaleResult {
	return payment.SaleResult{Request: payment.SaleRequest{Amount: amount, Source: payment.SourceECR, ECRRef: ref},
		Outcome: payment.OutcomeApproved, Channel: "WX_MICROPAY", PayOrderID: "AM20261127153000123456789012", Final: true}
}

func TestSaleFullAnswerA010(t *testing.T) {
	r := newRig(t, Config{POSNumber: "01"}, port8N1)
	if err := r.reg.Send(req(2865, true, false, "")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	if sale.Amount != 2865 || sale.Currency != "CAD" || sale.Source != payment.SourceECR || sale.POSNumber != "01" {
		t.Fatalf("sale %+v", sale)
	}
	r.link.Result(approved("", 2865))
	res, err := r.reg.Receive(5*time.Second, true)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusApproved || res.Amount != 2865 || res.POS != "01" || res.Currency != "124" ||
		strings.TrimSpace(res.Report) != "WX AM20261127153000123456789012" || res.Mode != '1' {
		t.Fatalf("result %+v", res)
	}
}

func TestShortAnswerRefused(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	if err := r.reg.Send(req(1051, false, false, "INV0001")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	r.link.Result(payment.SaleResult{Request: sale, Outcome: payment.OutcomeRefused, Final: true})
	res, err := r.reg.Receive(5*time.Second, false)
	if err != nil {
		t.Fatal(err)
	}
	if res.Status != StatusRefused || res.Private != "INV0001   " || res.Amount != 1051 || res.Full {
		t.Fatalf("%+v", res)
	}
}

func TestImmediateA011AndKeptResult(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	if err := r.reg.Send(req(2865, false, true, "INV77")); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(5*time.Second, false)
	if err != nil || res.Status != StatusNotVerified || res.Private != "INV77     " {
		t.Fatalf("immediate answer %+v %v", res, err)
	}
	// The final outcome arrives later; it is kept for the register.
	r.link.Result(approved("INV77", 2865))
	waitKept(t, r.link, "INV77")
	if err := r.reg.Send(req(2865, true, false, "INV77")); err != nil {
		t.Fatal(err)
	}
	res, err = r.reg.Receive(5*time.Second, true)
	if err != nil || res.Status != StatusApproved {
		t.Fatalf("asked again: %+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 1 {
		t.Fatalf("asking again started %d sales", n)
	}
	deadline := time.Now().Add(2 * time.Second)
	for _, ok := r.link.Kept("INV77"); ok; _, ok = r.link.Kept("INV77") {
		if time.Now().After(deadline) {
			t.Fatal("a delivered result is still kept")
		}
		time.Sleep(2 * time.Millisecond)
	}
}

func waitKept(t *testing.T, l *Link, ref string) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Second)
	for {
		if _, ok := l.Kept(ref); ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("result for %q not kept", ref)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestNAKAndRetransmission(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	r.m.Write([]byte{ENQ})
	if b, _ := r.reg.readByte(time.Second); b != ACK {
		t.Fatalf("ENQ answered %#x", b)
	}
	good := Frame(req(500, false, false, "R1").Encode())
	bad := append([]byte(nil), good...)
	bad[len(bad)-1] ^= 0x55
	r.m.Write(bad)
	if b, _ := r.reg.readByte(time.Second); b != NAK {
		t.Fatalf("bad LRC answered %#x", b)
	}
	short := Frame([]byte("0100000500"))
	r.m.Write(short)
	if b, _ := r.reg.readByte(time.Second); b != NAK {
		t.Fatalf("wrong length answered %#x", b)
	}
	r.m.Write(append([]byte("noise\x00\xff"), good...))
	if b, _ := r.reg.readByte(time.Second); b != ACK {
		t.Fatalf("good frame after noise answered %#x", b)
	}
	r.m.Write([]byte{EOT})
	if s := r.waitSale(); s.Amount != 500 || s.ECRRef != "R1" {
		t.Fatalf("sale %+v", s)
	}
}

func TestOversizedFrameNAK(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	r.m.Write([]byte{ENQ})
	r.reg.readByte(time.Second)
	r.m.Write(append([]byte{STX}, []byte(strings.Repeat("7", 120))...))
	if b, _ := r.reg.readByte(time.Second); b != NAK {
		t.Fatalf("oversized frame answered %#x", b)
	}
}

func TestSilentRegisterKeepsResult(t *testing.T) {
	r := newRig(t, Config{Timeout: 100 * time.Millisecond}, port8N1)
	if err := r.reg.Send(req(2865, true, false, "SILENT")); err != nil {
		t.Fatal(err)
	}
	r.waitSale()
	r.link.Result(approved("SILENT", 2865))
	// The register never answers ENQ: the link tries 3 times, then keeps it.
	enqs := 0
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		b, err := r.reg.readByte(200 * time.Millisecond)
		if err != nil {
			break
		}
		if b == ENQ {
			enqs++
		}
	}
	if enqs != 3 {
		t.Fatalf("%d ENQs, want 3", enqs)
	}
	waitKept(t, r.link, "SILENT")
	r.reg.Timeout = time.Second
	if err := r.reg.Send(req(2865, true, false, "SILENT")); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(3*time.Second, true)
	if err != nil || res.Status != StatusApproved {
		t.Fatalf("re-asked: %+v %v", res, err)
	}
}

func TestRequestDuringSaleNAK(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	for _, st := range []payment.State{payment.StateAwaitingCode, payment.StatePolling, payment.StateStarting} {
		r.term.mu.Lock()
		r.term.state = st
		r.term.mu.Unlock()
		if err := r.reg.Send(req(100, false, false, "")); !errors.Is(err, ErrRefused) {
			t.Fatalf("request while %s: %v", st, err)
		}
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a sale was started")
	}
}

func TestRefusedRequests(t *testing.T) {
	r := newRig(t, Config{POSNumber: "01"}, port8N1)
	cases := []Request{
		{POS: "01", Amount: 100, Mode: '1', Type: TypePurchase, Currency: "978", Private: padRef("EUR")},
		{POS: "01", Amount: 0, Mode: '1', Type: TypePurchase, Currency: "124", Private: padRef("ZERO")},
		{POS: "01", Amount: 100, Mode: '1', Type: TypePurchase, Currency: "840", Private: padRef("USD")},
		{POS: "02", Amount: 100, Mode: 'C', Type: TypePurchase, Currency: "124", Private: padRef("OTHERPOS")},
		{POS: "01", Amount: 100, Mode: '1', Type: TypeRefund, Currency: "124", Private: padRef("NOREFUND")},
		{POS: "01", Amount: 100, Mode: '1', Type: TypeCredit, Currency: "124", Private: padRef("CREDIT")},
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
		if res.Status != StatusRefused || res.POS != c.POS || res.Amount != c.Amount || res.Mode != c.Mode || res.Currency != c.Currency || res.Private != c.Private {
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
	if res, _ := r.reg.Receive(3*time.Second, false); res.Status != StatusRefused {
		t.Fatalf("engine refusal not passed on: %+v", res)
	}
}

func TestRefundFromRegister(t *testing.T) {
	r := newRig(t, Config{AllowRefunds: true}, port8N1)
	r.term.mu.Lock()
	r.term.refund = payment.SaleResult{Outcome: payment.OutcomeApproved, Channel: "WX_MICROPAY", PayOrderID: "AM5"}
	r.term.mu.Unlock()
	rq := Request{POS: "01", Amount: 500, FullAnswer: true, Mode: '1', Type: TypeRefund, Currency: "124", Private: "0000012345"}
	if err := r.reg.Send(rq); err != nil {
		t.Fatal(err)
	}
	res, err := r.reg.Receive(3*time.Second, true)
	if err != nil || res.Status != StatusApproved || res.Amount != 500 {
		t.Fatalf("%+v %v", res, err)
	}
	r.term.mu.Lock()
	defer r.term.mu.Unlock()
	if len(r.term.refunds) != 1 || r.term.refunds[0] != "0000012345" {
		t.Fatalf("refunds %v", r.term.refunds)
	}
}

func Test7E1Link(t *testing.T) {
	r := newRig(t, Config{}, scanner.PortConfig{Baud: 9600, DataBits: 7, Parity: "even"})
	if err := r.reg.Send(req(1234, false, false, "SEVEN")); err != nil {
		t.Fatal(err)
	}
	sale := r.waitSale()
	r.link.Result(payment.SaleResult{Request: sale, Outcome: payment.OutcomeApproved, Final: true})
	if res, err := r.reg.Receive(3*time.Second, false); err != nil || res.Status != StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
}

func TestTCPTransport(t *testing.T) {
	term := &stubTerm{state: payment.StateIdle}
	l := NewLink(Config{Currency: "CAD", Timeout: 300 * time.Millisecond, Logger: zaptest.NewLogger(t)}, term)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- l.RunTCP(ctx, ln) }()
	defer func() { cancel(); <-done }()
	for i := 0; i < 2; i++ { // one connection after another
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		reg := &Register{Conn: c, Timeout: time.Second}
		if err := reg.Send(req(2865, true, false, "TCP")); err != nil {
			t.Fatal(err)
		}
		deadline := time.Now().Add(2 * time.Second)
		for n, _ := term.count(); n <= i && time.Now().Before(deadline); n, _ = term.count() {
			time.Sleep(2 * time.Millisecond)
		}
		l.Result(approved("TCP", 2865))
		if res, err := reg.Receive(3*time.Second, true); err != nil || res.Status != StatusApproved {
			t.Fatalf("%+v %v", res, err)
		}
		c.Close()
	}
}

func TestAskAgainAnsweredFromJournal(t *testing.T) {
	r := newRig(t, Config{}, port8N1)
	r.term.mu.Lock()
	r.term.journal = map[string]payment.SaleResult{
		"PAIDINV":  approved("PAIDINV", 2865),
		"DECLINED": {Outcome: payment.OutcomeRefused},
	}
	r.term.mu.Unlock()
	// An approved invoice asked again gets its result, not a second sale.
	if err := r.reg.Send(req(2865, true, false, "PAIDINV")); err != nil {
		t.Fatal(err)
	}
	if res, err := r.reg.Receive(3*time.Second, true); err != nil || res.Status != StatusApproved {
		t.Fatalf("%+v %v", res, err)
	}
	if n, _ := r.term.count(); n != 0 {
		t.Fatal("a second sale was started for an approved invoice")
	}
	// A declined invoice may be tried again.
	if err := r.reg.Send(req(2865, true, false, "DECLINED")); err != nil {
		t.Fatal(err)
	}
	if s := r.waitSale(); s.ECRRef != "DECLINED" {
		t.Fatalf("%+v", s)
	}
}
