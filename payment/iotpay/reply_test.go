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
