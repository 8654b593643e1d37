package iotpaysim_test

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func post(t *testing.T, h http.Handler, method, path, body string) map[string]any {
	t.Helper()
	req := httptest.NewRequest(method, path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	var out map[string]any
	if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
		t.Fatalf("%s %s: reply %q is not JSON", method, path, rec.Body.String())
	}
	return out
}

func TestRequestChecks(t *testing.T) {
	sim := iotpaysim.New(iotpaysim.Options{MchID: "100", Key: "K"})
	fields := map[string]string{"mchId": "100", "mchOrderNo": "A1", "currency": "CAD", "channelId": iotpay.ChannelWeChat,
		"amount": "2865", "codeType": "barcode", "identityCode": "134567890123456789", "subject": "s", "body": "b", "notifyUrl": "n", "clientIp": "1.2.3.4", "jobNo": "j"}
	numeric := map[string]bool{"amount": true}
	good, err := iotpay.EncodeParams(fields, numeric, "K")
	if err != nil {
		t.Fatal(err)
	}
	bad, _ := iotpay.EncodeParams(fields, numeric, "OTHER")
	tests := []struct {
		name, method, path, body, errCode string
	}{
		{"GET refused", http.MethodGet, "/v1/create_order", "", iotpay.CodePostRequired},
		{"no params", http.MethodPost, "/v1/create_order", "x=1", iotpay.CodeEmptyBody},
		{"params not JSON", http.MethodPost, "/v1/create_order", "params=%7Bbroken", iotpay.CodeParameter},
		{"wrong merchant", http.MethodPost, "/v1/query_order", url.Values{"params": {`{"mchId":"999","mchOrderNo":"A1","sign":"X"}`}}.Encode(), iotpay.CodeNoMerchant},
		{"bad signature", http.MethodPost, "/v1/create_order", bad, iotpay.CodeSignature},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			out := post(t, sim, tc.method, tc.path, tc.body)
			if out["retCode"] != "FAIL" || out["errCode"] != tc.errCode {
				t.Fatalf("reply %v, want FAIL %s", out, tc.errCode)
			}
		})
	}
	if len(sim.Orders()) != 0 {
		t.Fatal("a refused request created an order")
	}
	out := post(t, sim, http.MethodPost, "/v1/create_order", good)
	po, _ := out["payOrder"].(map[string]any)
	if out["retCode"] != "SUCCESS" || po["status"] != float64(2) {
		t.Fatalf("good request: %v", out)
	}
	if got := sim.Requests("create_order"); got != 5 {
		t.Fatalf("create_order requests counted %d, want 5", got)
	}
	if got := sim.OrderRequests("create_order", "A1"); got != 1 {
		t.Fatalf("signed create_order requests for A1: %d", got)
	}
	o, ok := sim.Order("A1")
	if !ok || o.CodeMasked != "13************6789" {
		t.Fatalf("ledger keeps %+v", o)
	}
	rec := httptest.NewRecorder()
	sim.ServeHTTP(rec, httptest.NewRequest(http.MethodPost, "/v1/other", nil))
	if rec.Code != http.StatusNotFound {
		t.Fatalf("unknown path answered %d", rec.Code)
	}
}

func TestScenarioSelection(t *testing.T) {
	for amount, want := range map[int64]int{2865: 0, 100: 0, 1050: 0, 51: 51, 1259: 59, 60: 0, 99: 0} {
		if got := iotpaysim.Scenario(amount); got != want {
			t.Errorf("Scenario(%d) = %d, want %d", amount, got, want)
		}
	}
}

func TestFakeClock(t *testing.T) {
	c := iotpaysim.NewFakeClock(time.Unix(0, 0))
	ch := c.After(10 * time.Second)
	c.Advance(9 * time.Second)
	select {
	case <-ch:
		t.Fatal("fired early")
	default:
	}
	c.Advance(time.Second)
	select {
	case <-ch:
	default:
		t.Fatal("did not fire")
	}
	if got := c.Now(); !got.Equal(time.Unix(10, 0)) {
		t.Fatalf("now %v", got)
	}
}

func TestSnapshotRestore(t *testing.T) {
	sim := iotpaysim.New(iotpaysim.Options{MchID: "100", Key: "K"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	c, _ := iotpay.New(iotpay.Config{BaseURL: srv.URL, MchID: "100", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1"})
	ctx := context.Background()
	c.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "A", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 1052, IdentityCode: "134567890123456789"})
	c.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: "A"})
	snap, err := sim.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	again := iotpaysim.New(iotpaysim.Options{MchID: "100", Key: "K"})
	if err := again.Restore(snap); err != nil {
		t.Fatal(err)
	}
	srv2 := httptest.NewServer(again)
	defer srv2.Close()
	c2, _ := iotpay.New(iotpay.Config{BaseURL: srv2.URL, MchID: "100", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b", ClientIP: "127.0.0.1"})
	// The query count survived: scenario 52 pays on the third query.
	if r := c2.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: "A"}); r.Outcome != iotpay.OutcomePending {
		t.Fatalf("second query %+v", r)
	}
	if r := c2.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: "A"}); r.Outcome != iotpay.OutcomePaid {
		t.Fatalf("third query %+v", r)
	}
	// The used code survived too.
	if r := c2.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "B", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 100, IdentityCode: "134567890123456789"}); r.Outcome != iotpay.OutcomeFailed {
		t.Fatalf("reused code after restore: %+v", r)
	}
	if err := again.Restore([]byte("{")); err == nil {
		t.Fatal("bad snapshot accepted")
	}
}

func TestFaults(t *testing.T) {
	sim := iotpaysim.New(iotpaysim.Options{MchID: "100", Key: "K"})
	srv := httptest.NewServer(sim)
	defer srv.Close()
	client, err := iotpay.New(iotpay.Config{BaseURL: srv.URL, MchID: "100", Key: "K", JobNo: "j", NotifyURL: "n", Subject: "s", Body: "b",
		ClientIP: "127.0.0.1", Timeout: 2 * time.Second, RequireSignedReplies: true})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	var fault iotpaysim.Fault
	sim.SetFaults(func(endpoint string, f map[string]string) iotpaysim.Fault {
		if f["mchOrderNo"] == "" || !strings.HasPrefix(f["mchOrderNo"], "F") {
			return iotpaysim.Fault{}
		}
		return fault
	})
	create := func(no string) iotpay.Result {
		return client.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: no, ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 1000,
			IdentityCode: "13456789012345" + no[1:]})
	}
	query := func(no string) iotpay.Result { return client.QueryOrder(ctx, iotpay.QueryRequest{MchOrderNo: no}) }

	fault = iotpaysim.Fault{Refuse: iotpay.CodeParameter}
	if res := create("F0001"); res.Outcome != iotpay.OutcomeFailed {
		t.Fatalf("refused create: %+v", res)
	}
	if _, ok := sim.Order("F0001"); ok {
		t.Fatal("a refused request created an order")
	}
	fault = iotpaysim.Fault{HTTPStatus: 503}
	if res := create("F0002"); res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("503: %+v", res)
	}
	if _, ok := sim.Order("F0002"); ok {
		t.Fatal("an HTTP error created an order")
	}
	fault = iotpaysim.Fault{DropReply: true}
	if res := create("F0003"); res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("dropped reply: %+v", res)
	}
	if o, ok := sim.Order("F0003"); !ok || o.Status != iotpay.StatusPaid {
		t.Fatalf("a dropped reply must still create the order: %+v", o)
	}
	fault = iotpaysim.Fault{}
	if res := create("F0004"); res.Outcome != iotpay.OutcomePaid {
		t.Fatal(res)
	}
	for lie, check := range map[iotpaysim.Lie]func(iotpay.Result) bool{
		iotpaysim.LieAmount:   func(r iotpay.Result) bool { return r.Amount == 1100 },
		iotpaysim.LieCurrency: func(r iotpay.Result) bool { return r.Currency == "USD" },
	} {
		fault = iotpaysim.Fault{Lie: lie}
		if res := query("F0004"); res.Outcome != iotpay.OutcomePaid || !check(res) {
			t.Fatalf("lie %d: %+v", lie, res)
		}
	}
	fault = iotpaysim.Fault{Lie: iotpaysim.LieOrder}
	if res := query("F0004"); res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("a reply naming another order must be unknown to the client: %+v", res)
	}
	fault = iotpaysim.Fault{NoPayOrderID: true}
	if res := query("F0004"); res.Outcome != iotpay.OutcomePaid || res.PayOrderID != "" {
		t.Fatalf("no payOrderId: %+v", res)
	}
	fault = iotpaysim.Fault{Refuse: iotpay.CodeSignature}
	if res := query("F0004"); res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("a refused query must be unknown: %+v", res)
	}
}
