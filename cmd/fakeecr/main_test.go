package main

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/ecr"
	"github.com/scanpay/scanpay/payment"
)

// autoTerm approves every sale at once through the link.
type autoTerm struct{ link *ecr.Link }

func (a *autoTerm) RequestSale(_ context.Context, r payment.SaleRequest) error {
	go a.link.Result(payment.SaleResult{Request: r, Outcome: payment.OutcomeApproved, Channel: "WX_MICROPAY", PayOrderID: "AM42", Final: true})
	return nil
}
func (a *autoTerm) RefundForECR(context.Context, payment.ECRRefund) payment.SaleResult {
	return payment.SaleResult{Outcome: payment.OutcomeRefused}
}
func (a *autoTerm) State() payment.State { return payment.StateIdle }
func (a *autoTerm) LastResult(context.Context, string) (payment.SaleResult, error) {
	return payment.SaleResult{}, payment.ErrNoOrder
}

func (a *autoTerm) Taken(context.Context, payment.SaleResult) {}

func (a *autoTerm) LastResultFor(context.Context, string, int64) (payment.SaleResult, error) {
	return payment.SaleResult{}, payment.ErrNoOrder
}

func TestSaleOverTCP(t *testing.T) {
	term := &autoTerm{}
	term.link = ecr.NewLink(ecr.Config{Currency: "CAD", Logger: zaptest.NewLogger(t)}, term)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- term.link.RunTCP(ctx, ln) }()
	defer func() { cancel(); <-done }()
	var out, errb bytes.Buffer
	code := run(context.Background(), []string{"--tcp", ln.Addr().String(), "--amount", "2865", "--private", "INV1", "--wait", "5s"}, &out, &errb)
	if code != 0 {
		t.Fatalf("exit %d: %s %s", code, out.String(), errb.String())
	}
	if !strings.Contains(out.String(), "status 0 (approved), amount 28.65") || !strings.Contains(out.String(), `report "WX AM42"`) {
		t.Fatalf("output: %s", out.String())
	}
	out.Reset()
	if code := run(context.Background(), []string{"--tcp", ln.Addr().String(), "--amount", "500", "--refund", "--short", "--wait", "5s"}, &out, &errb); code != 3 {
		t.Fatalf("refused refund exit %d: %s", code, out.String())
	}
}

func TestUsage(t *testing.T) {
	for _, args := range [][]string{{}, {"--tcp", "x:1"}, {"--tcp", "x:1", "--serial", "/y", "--amount", "1"}, {"--tcp", "x:1", "--amount", "1", "--private", "ELEVENCHARS"}} {
		var b bytes.Buffer
		if code := run(context.Background(), args, &b, &b); code != 2 {
			t.Errorf("%v: exit %d", args, code)
		}
	}
	var b bytes.Buffer
	if code := run(context.Background(), []string{"--tcp", "127.0.0.1:1", "--amount", "100", "--timeout", "100ms"}, &b, &b); code != 1 {
		t.Errorf("no terminal: exit %d", code)
	}
	_ = time.Second
}
