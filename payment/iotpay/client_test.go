package iotpay_test

import (
	"context"
	"crypto/md5"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"go.uber.org/zap/zaptest"

	"github.com/scanpay/scanpay/payment/iotpay"
	"github.com/scanpay/scanpay/payment/iotpaysim"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	testMch = "10000576"
	testKey = "TESTKEY1234567890"
)

type rig struct {
	sim    *iotpaysim.Sim
	clock  *iotpaysim.FakeClock
	srv    *httptest.Server
	client *iotpay.Client
}

func newRig(t *testing.T, timeout time.Duration) *rig {
	t.Helper()
	clock := iotpaysim.NewFakeClock(time.Date(2026, 11, 27, 15, 30, 0, 0, time.UTC))
	sim := iotpaysim.New(iotpaysim.Options{MchID: testMch, Key: testKey, Clock: clock, Logger: zaptest.NewLogger(t)})
	srv := httptest.NewServer(sim)
	t.Cleanup(srv.Close)
	return &rig{sim: sim, clock: clock, srv: srv, client: newClient(t, srv.URL, testKey, timeout)}
}

func newClient(t *testing.T, base, key string, timeout time.Duration) *iotpay.Client {
	t.Helper()
	c, err := iotpay.New(iotpay.Config{
		BaseURL: base, MchID: testMch, Key: key, JobNo: "cashier1",
		NotifyURL: "http://localhost/notify", Subject: "scanpay", Body: "checkout",
		ClientIP: "127.0.0.1", Timeout: timeout, RequireSignedReplies: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	return c
}

var orderSeq atomic.Int64

func order(amount int64, code string) iotpay.CreateRequest {
	return iotpay.CreateRequest{
		MchOrderNo:   fmt.Sprintf("T01-%08d", orderSeq.Add(1)),
		ChannelID:    iotpay.ChannelWeChat,
		Currency:     "CAD",
		Amount:       amount,
		IdentityCode: code,
	}
}

func code(n int) string { return fmt.Sprintf("13%016d", n) }

func query(r *rig, no string) iotpay.Result {
	return r.client.QueryOrder(context.Background(), iotpay.QueryRequest{MchOrderNo: no})
}

func TestScenarios(t *testing.T) {
	ctx := context.Background()
	t.Run("00 paid at once", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(2865, code(1))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomePaid || res.Status != 2 || res.PayOrderID == "" {
			t.Fatalf("got %+v", res)
		}
		o, _ := r.sim.Order(req.MchOrderNo)
		if o.Status != 2 || o.PayOrderID != res.PayOrderID || o.Amount != 2865 {
			t.Fatalf("ledger %+v", o)
		}
		if q := r.client.QueryOrder(ctx, iotpay.QueryRequest{PayOrderID: res.PayOrderID}); q.Outcome != iotpay.OutcomePaid || q.MchOrderNo != req.MchOrderNo || q.Amount != 2865 {
			t.Fatalf("query by payOrderId: %+v", q)
		}
	})
	t.Run("51 declined", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1051, code(2))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomeFailed || res.Err == nil || res.Err.Msg != "insufficient balance" {
			t.Fatalf("got %+v", res)
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomeFailed {
			t.Fatalf("confirming query: %+v", q)
		}
		if len(r.sim.PaidOrders()) != 0 {
			t.Fatal("ledger has a paid order")
		}
	})
	t.Run("52 password then paid on third query", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1052, code(3))
		if res := r.client.CreateOrder(ctx, req); res.Outcome != iotpay.OutcomePending || res.Status != 1 {
			t.Fatalf("create: %+v", res)
		}
		want := []iotpay.Outcome{iotpay.OutcomePending, iotpay.OutcomePending, iotpay.OutcomePaid}
		for i, w := range want {
			if got := query(r, req.MchOrderNo); got.Outcome != w {
				t.Fatalf("query %d: %v, want %v", i+1, got.Outcome, w)
			}
		}
	})
	t.Run("53 cancelled by user", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1053, code(4))
		r.client.CreateOrder(ctx, req)
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePending {
			t.Fatalf("query 1: %+v", q)
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomeFailed || q.Status != 9 {
			t.Fatalf("query 2: %+v", q)
		}
	})
	t.Run("54 paid after 90s", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1054, code(5))
		r.client.CreateOrder(ctx, req)
		r.clock.Advance(89 * time.Second)
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePending {
			t.Fatalf("at 89s: %+v", q)
		}
		r.clock.Advance(time.Second)
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePaid {
			t.Fatalf("at 90s: %+v", q)
		}
	})
	t.Run("55 reply lost", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1055, code(6))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomeUnknown || res.Err.NotSent {
			t.Fatalf("create: %+v (%v)", res, res.Err)
		}
		if got := r.sim.PaidOrders(); len(got) != 1 || got[0] != req.MchOrderNo {
			t.Fatalf("ledger paid orders %v", got)
		}
		if n := r.sim.OrderRequests("create_order", req.MchOrderNo); n != 1 {
			t.Fatalf("create_order sent %d times", n)
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePaid {
			t.Fatalf("query: %+v", q)
		}
	})
	t.Run("56 bad gateway", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1056, code(7))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomeUnknown || !strings.Contains(res.Err.Msg, "502") {
			t.Fatalf("create: %+v", res)
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomeNotFound {
			t.Fatalf("query: %+v", q)
		}
		if n := r.sim.Requests("create_order"); n != 1 {
			t.Fatalf("create_order sent %d times", n)
		}
	})
	t.Run("57 slow reply", func(t *testing.T) {
		r := newRig(t, 150*time.Millisecond)
		req := order(1057, code(8))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomeUnknown || res.Err.Msg != "gateway timeout" {
			t.Fatalf("create: %+v (%v)", res, res.Err)
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePaid {
			t.Fatalf("query: %+v", q)
		}
		if n := r.sim.OrderRequests("create_order", req.MchOrderNo); n != 1 {
			t.Fatalf("create_order sent %d times", n)
		}
	})
	t.Run("58 malformed query replies", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1058, code(9))
		if res := r.client.CreateOrder(ctx, req); res.Outcome != iotpay.OutcomePending {
			t.Fatalf("create: %+v", res)
		}
		for i := 0; i < 2; i++ {
			if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomeUnknown {
				t.Fatalf("query %d: %+v", i+1, q)
			}
		}
		if q := query(r, req.MchOrderNo); q.Outcome != iotpay.OutcomePaid {
			t.Fatalf("query 3: %+v", q)
		}
	})
	t.Run("59 wrong sign never paid", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		req := order(1059, code(10))
		res := r.client.CreateOrder(ctx, req)
		if res.Outcome != iotpay.OutcomeUnknown || res.Err.Msg != "badly signed reply" {
			t.Fatalf("create: %+v", res)
		}
		for i := 0; i < 3; i++ {
			if q := query(r, req.MchOrderNo); q.Outcome == iotpay.OutcomePaid || q.Outcome != iotpay.OutcomeUnknown {
				t.Fatalf("query: %+v", q)
			}
		}
		if len(r.sim.PaidOrders()) != 1 {
			t.Fatal("the simulator should hold the order as paid")
		}
	})
	t.Run("other endings act like 00", func(t *testing.T) {
		r := newRig(t, 2*time.Second)
		for i, amount := range []int64{50, 1060, 99, 100} {
			if res := r.client.CreateOrder(ctx, order(amount, code(100+i))); res.Outcome != iotpay.OutcomePaid {
				t.Fatalf("amount %d: %+v", amount, res)
			}
		}
	})
}

func TestSingleUseCodeAndUniqueOrder(t *testing.T) {
	r := newRig(t, 2*time.Second)
	ctx := context.Background()
	first := order(100, code(1))
	if res := r.client.CreateOrder(ctx, first); res.Outcome != iotpay.OutcomePaid {
		t.Fatal(res)
	}
	again := order(200, code(1))
	if res := r.client.CreateOrder(ctx, again); res.Outcome != iotpay.OutcomeFailed {
		t.Fatalf("reused code: %+v", res)
	}
	dup := first
	dup.IdentityCode = code(2)
	res := r.client.CreateOrder(ctx, dup)
	if res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("duplicate mchOrderNo must leave the fate open, got %+v", res)
	}
	if paid := r.sim.PaidOrders(); len(paid) != 1 {
		t.Fatalf("paid orders %v", paid)
	}
}

func TestBadKeyRejected(t *testing.T) {
	r := newRig(t, 2*time.Second)
	bad := newClient(t, r.srv.URL, "WRONGKEY", 2*time.Second)
	res := bad.CreateOrder(context.Background(), order(100, code(1)))
	// The FAIL reply is unsigned, so it cannot decide the order; its text
	// still tells the technician what is wrong.
	if res.Outcome != iotpay.OutcomeUnknown || res.Err == nil {
		t.Fatalf("got %+v", res)
	}
	if len(r.sim.Orders()) != 0 {
		t.Fatal("an order was created with a bad signature")
	}
	if strings.Contains(res.Err.Error(), "WRONGKEY") {
		t.Fatal("key in error")
	}
}

func TestRefunds(t *testing.T) {
	r := newRig(t, 2*time.Second)
	ctx := context.Background()
	paid := r.client.CreateOrder(ctx, order(1000, code(1)))
	refund := func(no string, amount int64) iotpay.Result {
		return r.client.RefundOrder(ctx, iotpay.RefundRequest{MchRefundNo: no, PayOrderID: paid.PayOrderID, Amount: amount, Currency: "CAD"})
	}
	if res := refund("R1", 400); res.Outcome != iotpay.OutcomeRefunded {
		t.Fatalf("partial: %+v", res)
	}
	if res := refund("R2", 700); res.Outcome != iotpay.OutcomeFailed {
		t.Fatalf("above refundable: %+v", res)
	}
	if res := refund("R1", 100); res.Outcome != iotpay.OutcomeUnknown {
		t.Fatalf("duplicate refund number: %+v", res)
	}
	if res := refund("R3", 600); res.Outcome != iotpay.OutcomeRefunded {
		t.Fatalf("rest: %+v", res)
	}
	if res := refund("R4", 1); res.Outcome != iotpay.OutcomeFailed {
		t.Fatalf("nothing left: %+v", res)
	}
	declinedReq := order(1051, code(2))
	r.client.CreateOrder(ctx, declinedReq)
	declined, _ := r.sim.Order(declinedReq.MchOrderNo)
	if res := r.client.RefundOrder(ctx, iotpay.RefundRequest{MchRefundNo: "R5", PayOrderID: declined.PayOrderID, Amount: 1, Currency: "CAD"}); res.Outcome == iotpay.OutcomeRefunded {
		t.Fatalf("refund of a declined order accepted: %+v", res)
	}
	refs := r.sim.Refunds()
	if len(refs) != 2 || refs[0].Amount+refs[1].Amount != 1000 {
		t.Fatalf("ledger refunds %+v", refs)
	}
}

// capture records the last request body the handler saw.
type capture struct {
	form url.Values
	raw  string
}

func TestRequestEncoding(t *testing.T) {
	var got capture
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got.raw = string(b)
		got.form, _ = url.ParseQuery(got.raw)
		if ct := r.Header.Get("Content-Type"); ct != "application/x-www-form-urlencoded" {
			t.Errorf("content type %q", ct)
		}
		w.WriteHeader(500)
	}))
	defer srv.Close()
	c, err := iotpay.New(iotpay.Config{BaseURL: srv.URL, MchID: testMch, Key: testKey, JobNo: "cashier1",
		NotifyURL: "http://x/n?a=1&b=2", Subject: "A&B + C=D", Body: "中文 商品 50%", ClientIP: "10.0.0.7"})
	if err != nil {
		t.Fatal(err)
	}
	c.CreateOrder(context.Background(), iotpay.CreateRequest{MchOrderNo: "T1", ChannelID: iotpay.ChannelAlipay,
		Currency: "USD", Amount: 2865, IdentityCode: "281234567890123456"})
	if len(got.form) != 1 {
		t.Fatalf("form has fields %v, want only params", got.form)
	}
	if strings.Contains(got.raw, "中") || strings.Contains(got.raw, " ") {
		t.Fatalf("body not URL-encoded: %s", got.raw)
	}
	params := got.form.Get("params")
	var obj map[string]any
	d := json.NewDecoder(strings.NewReader(params))
	d.UseNumber()
	if err := d.Decode(&obj); err != nil {
		t.Fatalf("params is not JSON: %v", err)
	}
	want := map[string]any{
		"mchId": testMch, "mchOrderNo": "T1", "jobNo": "cashier1", "currency": "USD",
		"channelId": "ALIPAY_MICROPAY", "amount": json.Number("2865"), "notifyUrl": "http://x/n?a=1&b=2",
		"subject": "A&B + C=D", "body": "中文 商品 50%", "codeType": "barcode",
		"identityCode": "281234567890123456", "clientIp": "10.0.0.7",
	}
	for k, v := range want {
		if obj[k] != v {
			t.Errorf("%s = %#v, want %#v", k, obj[k], v)
		}
	}
	for _, absent := range []string{"device", "deviceId", "remarks"} {
		if _, ok := obj[absent]; ok {
			t.Errorf("empty field %s sent", absent)
		}
	}
	fields, _ := iotpay.DecodeFields([]byte(params))
	if !iotpay.Verify(fields, testKey, fields["sign"]) {
		t.Fatal("request signature does not verify")
	}
	// The signing string, written out by hand: byte-order names, raw values.
	raw := "amount=2865&body=中文 商品 50%&channelId=ALIPAY_MICROPAY&clientIp=10.0.0.7&codeType=barcode&currency=USD&identityCode=281234567890123456&jobNo=cashier1&mchId=10000576&mchOrderNo=T1&notifyUrl=http://x/n?a=1&b=2&subject=A&B + C=D&key=" + testKey
	sum := md5.Sum([]byte(raw))
	if want := strings.ToUpper(hex.EncodeToString(sum[:])); fields["sign"] != want {
		t.Fatalf("sign %s, want %s", fields["sign"], want)
	}
}

func TestFaults(t *testing.T) {
	ctx := context.Background()
	signed := func(m map[string]any) string {
		f := map[string]string{}
		for k, v := range m {
			if s, ok := v.(string); ok {
				f[k] = s
			}
		}
		m["sign"] = iotpay.Sign(f, testKey)
		b, _ := json.Marshal(m)
		return string(b)
	}
	paidReply := signed(map[string]any{"retCode": "SUCCESS", "resCode": "SUCCESS", "mchOrderNo": "T1", "payOrderId": "P1", "status": "2"})
	tests := []struct {
		name    string
		handler http.HandlerFunc
		want    iotpay.Outcome
		msg     string
	}{
		{"truncated json", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, paidReply[:len(paidReply)-5]) }, iotpay.OutcomeUnknown, "unreadable reply"},
		{"html instead of json", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/html")
			io.WriteString(w, "<html>maintenance</html>")
		}, iotpay.OutcomeUnknown, "unreadable reply"},
		{"wrong content type but valid", func(w http.ResponseWriter, _ *http.Request) {
			w.Header().Set("Content-Type", "text/plain")
			io.WriteString(w, paidReply)
		}, iotpay.OutcomePaid, ""},
		{"10 MB body", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"retCode":"SUCCESS","x":"`)
			chunk := strings.Repeat("a", 64<<10)
			for i := 0; i < 160; i++ {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}, iotpay.OutcomeUnknown, "reply too large"},
		{"503", func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(503); io.WriteString(w, paidReply) }, iotpay.OutcomeUnknown, "gateway error HTTP 503"},
		{"missing sign", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, `{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"P1","mchOrderNo":"T1","status":2}}`)
		}, iotpay.OutcomeUnknown, "unsigned reply"},
		{"tampered status", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, strings.Replace(paidReply, `"status":"2"`, `"status":"3"`, 1))
		}, iotpay.OutcomeUnknown, "badly signed reply"},
		{"redirect not followed", func(w http.ResponseWriter, r *http.Request) {
			http.Redirect(w, r, "/elsewhere", http.StatusTemporaryRedirect)
		}, iotpay.OutcomeUnknown, "gateway error HTTP 307"},
		{"reply for another order", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, signed(map[string]any{"retCode": "SUCCESS", "resCode": "SUCCESS", "mchOrderNo": "OTHER", "status": "2"}))
		}, iotpay.OutcomeUnknown, "reply names another order"},
		{"system error code", func(w http.ResponseWriter, _ *http.Request) {
			io.WriteString(w, signed(map[string]any{"retCode": "SUCCESS", "resCode": "FAIL", "errCode": "0110", "errCodeDes": "upstream timeout"}))
		}, iotpay.OutcomeUnknown, "upstream timeout"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(tc.handler)
			defer srv.Close()
			c := newClient(t, srv.URL, testKey, 2*time.Second)
			res := c.CreateOrder(ctx, iotpay.CreateRequest{MchOrderNo: "T1", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 100, IdentityCode: "134567890123456789"})
			if res.Outcome != tc.want {
				t.Fatalf("outcome %v, want %v (%v)", res.Outcome, tc.want, res.Err)
			}
			if tc.msg != "" && (res.Err == nil || res.Err.Msg != tc.msg) {
				t.Fatalf("message %v, want %q", res.Err, tc.msg)
			}
			if res.Err != nil && strings.Contains(res.Err.Error(), "134567890123456789") {
				t.Fatal("payment code in error")
			}
		})
	}
}

func TestConnectionRefusedIsNotSent(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	c := newClient(t, "http://"+addr, testKey, time.Second)
	res := c.CreateOrder(context.Background(), order(100, code(1)))
	if res.Outcome != iotpay.OutcomeUnknown || !res.Err.NotSent || res.Err.Msg != "gateway unreachable" {
		t.Fatalf("got %+v (%v)", res, res.Err)
	}
	if strings.Contains(res.Err.Error(), testKey) {
		t.Fatal("key leaked into error")
	}
}

func TestLocalValidation(t *testing.T) {
	c := newClient(t, "http://127.0.0.1:1", testKey, time.Second)
	ctx := context.Background()
	bad := []iotpay.CreateRequest{
		{MchOrderNo: "", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 1, IdentityCode: "1"},
		{MchOrderNo: strings.Repeat("x", 31), ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 1, IdentityCode: "1"},
		{MchOrderNo: "a", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 0, IdentityCode: "1"},
		{MchOrderNo: "a", ChannelID: "CARD", Currency: "CAD", Amount: 1, IdentityCode: "1"},
		{MchOrderNo: "a", ChannelID: iotpay.ChannelWeChat, Currency: "EUR", Amount: 1, IdentityCode: "1"},
		{MchOrderNo: "a", ChannelID: iotpay.ChannelWeChat, Currency: "CAD", Amount: 1, IdentityCode: ""},
	}
	for i, req := range bad {
		if res := c.CreateOrder(ctx, req); res.Outcome != iotpay.OutcomeFailed || !res.Err.NotSent {
			t.Errorf("case %d: %+v", i, res)
		}
	}
	if res := c.QueryOrder(ctx, iotpay.QueryRequest{}); res.Outcome != iotpay.OutcomeFailed {
		t.Errorf("query without number: %+v", res)
	}
	for _, cfg := range []iotpay.Config{{BaseURL: "ftp://x", MchID: "1", Key: "k"}, {BaseURL: "http://x", Key: "k"}, {BaseURL: "http://x", MchID: "1"}} {
		if _, err := iotpay.New(cfg); err == nil {
			t.Errorf("New(%+v) accepted", cfg)
		}
	}
}
