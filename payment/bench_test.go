package payment_test

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"

	"go.uber.org/zap"

	"github.com/scanpay/scanpay/payment"
	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/journal"
)

// BenchmarkSale measures the engine's own cost per sale with an in-memory
// gateway (no network): classification, code hashing, journal commits with
// fsync, the state machine and outputs. It reports fsync'd commits per sale.
//
//	go test -run '^$' -bench BenchmarkSale -benchmem ./payment
func BenchmarkSale(b *testing.B) {
	for _, tc := range []struct {
		name string
		gw   *fakeGateway
	}{
		// A paid create reply is confirmed by one signed query (rule 1).
		{"paid_at_once", &fakeGateway{create: iotpay.Result{Outcome: iotpay.OutcomePaid, Status: 2, PayOrderID: "AM1", Amount: -1},
			query: func(int) iotpay.Result { return paid(2865, 2) }}},
		{"paid_after_one_query", &fakeGateway{create: pending(), query: func(int) iotpay.Result { return paid(2865, 2) }}},
	} {
		b.Run(tc.name, func(b *testing.B) {
			jr, err := journal.Open(filepath.Join(b.TempDir(), "j.db"), journal.Options{Exclusive: true}) // as the daemon opens it
			if err != nil {
				b.Fatal(err)
			}
			defer jr.Close()
			wallets, _ := payment.NewWallets(payment.DefaultWalletRules())
			rec := newRecorder()
			cfg := payment.DefaultConfig()
			cfg.PollInterval = 1 // the benchmark measures work, not waiting
			term, _ := payment.New(cfg, payment.Deps{Gateway: tc.gw, Journal: jr, Wallets: wallets, Results: rec, Logger: zap.NewNop()})
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error)
			go func() { done <- term.Run(ctx) }()
			<-term.Ready()
			before, syncedBefore := jr.Commits(), jr.SyncedCommits()
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				if err := term.RequestSale(ctx, payment.SaleRequest{Amount: 2865}); err != nil {
					b.Fatal(err)
				}
				term.Scan(ctx, payment.Code{Text: fmt.Sprintf("13%016d", i)})
				if r := <-rec.resCh; r.Outcome != payment.OutcomeApproved {
					b.Fatal(r)
				}
			}
			b.StopTimer()
			b.ReportMetric(float64(jr.Commits()-before)/float64(b.N), "commits/sale")
			b.ReportMetric(float64(jr.SyncedCommits()-syncedBefore)/float64(b.N), "fsyncs/sale")
			cancel()
			<-done
		})
	}
}
