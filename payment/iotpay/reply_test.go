package iotpay

import (
	"testing"
)

func TestParseReplyTolerant(t *testing.T) {
	tests := []struct {
		name       string
		body       string
		op         string
		want       Outcome
		status     int
		payOrderID string
	}{
		{"nested payOrder numeric status", `{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"AM1","mchOrderNo":"M1","status":2}}`, "create_order", OutcomePaid, 2, "AM1"},
		{"status as string", `{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"AM1","status":"3"}}`, "create_order", OutcomePaid, 3, "AM1"},
		{"payOrderId at top level", `{"retCode":"SUCCESS","resCode":"SUCCESS","payOrderId":"AM2","status":1}`, "create_order", OutcomePending, 1, "AM2"},
		{"unknown fields ignored", `{"retCode":"SUCCESS","resCode":"SUCCESS","payOrderId":"AM2","status":0,"new":{"x":[1,2]},"flag":true}`, "query_order", OutcomePending, 0, "AM2"},
		{"lower-case codes", `{"retCode":"success","resCode":"success","status":9}`, "query_order", OutcomeFailed, 9, ""},
		{"status 4", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":4}`, "query_order", OutcomeFailed, 4, ""},
		{"status 7 above 3", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":7}`, "query_order", OutcomeFailed, 7, ""},
		{"no status", `{"retCode":"SUCCESS","resCode":"SUCCESS"}`, "create_order", OutcomeUnknown, -1, ""},
		{"negative status", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":-2}`, "query_order", OutcomeUnknown, -1, ""},
		{"fractional status", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":2.5}`, "query_order", OutcomeUnknown, -1, ""},
		{"status text", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":"paid"}`, "query_order", OutcomeUnknown, -1, ""},
		{"retCode FAIL signature", `{"retCode":"FAIL","retMsg":"Signature Failed","errCode":"0013"}`, "create_order", OutcomeFailed, -1, ""},
		{"FAIL without code", `{"retCode":"SUCCESS","resCode":"FAIL","errCodeDes":"insufficient balance"}`, "create_order", OutcomeFailed, -1, ""},
		{"FAIL unknown code", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"9999"}`, "create_order", OutcomeUnknown, -1, ""},
		{"FAIL already paid", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0113"}`, "create_order", OutcomeUnknown, -1, ""},
		{"query not found", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0112"}`, "query_order", OutcomeNotFound, -1, ""},
		{"query FAIL no code", `{"retCode":"SUCCESS","resCode":"FAIL"}`, "query_order", OutcomeUnknown, -1, ""},
		{"FAIL beats status 2", `{"retCode":"SUCCESS","resCode":"FAIL","status":2}`, "create_order", OutcomeFailed, 2, ""},
		{"refund success", `{"retCode":"SUCCESS","resCode":"SUCCESS"}`, "refund_order", OutcomeRefunded, -1, ""},
		{"no codes at all", `{"status":2}`, "create_order", OutcomeUnknown, 2, ""},
		// A refused query request says nothing about the order.
		{"query refused 0011", `{"retCode":"FAIL","errCode":"0011","retMsg":"POST required"}`, "query_order", OutcomeUnknown, -1, ""},
		{"query refused 0013", `{"retCode":"FAIL","errCode":"0013","retMsg":"Signature Failed"}`, "query_order", OutcomeUnknown, -1, ""},
		{"query refused 0014", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0014"}`, "query_order", OutcomeUnknown, -1, ""},
		{"query refused 0015", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0015"}`, "query_order", OutcomeUnknown, -1, ""},
		{"query system error 0010", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0010"}`, "query_order", OutcomeUnknown, -1, ""},
		{"query FAIL with status 9", `{"retCode":"SUCCESS","resCode":"FAIL","status":9}`, "query_order", OutcomeUnknown, 9, ""},
		// A refund reply must say SUCCESS twice to count as made.
		{"refund without resCode", `{"retCode":"SUCCESS"}`, "refund_order", OutcomeUnknown, -1, ""},
		{"refund business refusal", `{"retCode":"SUCCESS","resCode":"FAIL","errCodeDes":"refund exceeds"}`, "refund_order", OutcomeFailed, -1, ""},
		{"refund request refused", `{"retCode":"FAIL","errCode":"0014"}`, "refund_order", OutcomeFailed, -1, ""},
		{"refund system error", `{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0010"}`, "refund_order", OutcomeUnknown, -1, ""},
		// The signed top-level status wins over the unsigned nested one.
		{"top-level status beats nested", `{"retCode":"SUCCESS","resCode":"SUCCESS","status":1,"payOrder":{"status":2}}`, "query_order", OutcomePending, 1, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r, err := ParseReply([]byte(tc.body))
			if err != nil {
				t.Fatal(err)
			}
			res := r.Classify(tc.op)
			if res.Outcome != tc.want || res.Status != tc.status || res.PayOrderID != tc.payOrderID {
				t.Fatalf("got outcome %v status %d id %q, want %v %d %q", res.Outcome, res.Status, res.PayOrderID, tc.want, tc.status, tc.payOrderID)
			}
		})
	}
}

func TestParseReplyRejects(t *testing.T) {
	for _, body := range []string{"", "null", "[]", `"x"`, "{", `{"a":1}{"b":2}`, "<html>"} {
		if _, err := ParseReply([]byte(body)); err == nil {
			t.Errorf("ParseReply(%q) accepted", body)
		}
	}
}

func TestReplySignatureCoversTopLevelScalars(t *testing.T) {
	body := `{"retCode":"SUCCESS","resCode":"SUCCESS","retMsg":"","amount":2865,"ok":true,"payOrder":{"status":2},"sign":"X"}`
	r, err := ParseReply([]byte(body))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{"retCode": "SUCCESS", "resCode": "SUCCESS", "amount": "2865", "ok": "true"}
	if len(r.Signed) != len(want) {
		t.Fatalf("signed fields %v", r.Signed)
	}
	for k, v := range want {
		if r.Signed[k] != v {
			t.Fatalf("signed[%s] = %q, want %q", k, r.Signed[k], v)
		}
	}
}

func TestReplyNestedStatusMarked(t *testing.T) {
	r, err := ParseReply([]byte(`{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"AM1","status":2,"currency":"cad"}}`))
	if err != nil {
		t.Fatal(err)
	}
	res := r.Classify("create_order")
	if !res.StatusNested || res.Status != 2 || res.Currency != "CAD" {
		t.Fatalf("nested status not marked: %+v", res)
	}
	r, err = ParseReply([]byte(`{"retCode":"SUCCESS","resCode":"SUCCESS","status":"2","currency":"USD","amount":"2865"}`))
	if err != nil {
		t.Fatal(err)
	}
	res = r.Classify("query_order")
	if res.StatusNested || res.Currency != "USD" || res.Amount != 2865 {
		t.Fatalf("top-level reply: %+v", res)
	}
}

func TestScrubDigits(t *testing.T) {
	tests := []struct{ in, want string }{
		{"insufficient balance", "insufficient balance"},
		{"code 134567890123456789 already used", "code 13************6789 already used"},
		{"code 1345 6789 0123 4567 89 used", "code 13************6789 used"},
		{"code 1345-6789-0123-4567-89", "code 13************6789"},
		{"error 0112 at 2026-11-29", "error 0112 at 2026-11-29"},
		{"amount 123456789", "amount 123456789"},
		{"id 1234567890", "id 12****7890"},
		{"trailing 12345 ", "trailing 12345 "},
		{"", ""},
	}
	for _, tc := range tests {
		if got := ScrubDigits(tc.in); got != tc.want {
			t.Errorf("ScrubDigits(%q) = %q, want %q", tc.in, got, tc.want)
		}
	}
	if got := cashierText("paid with 134567890123456789\x00\n"); got != "paid with 13************6789" {
		t.Errorf("cashierText kept a code or a control byte: %q", got)
	}
}
