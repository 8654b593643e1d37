package iotpay

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// FuzzParseReply feeds arbitrary bodies to the parser and classifier. No
// input may panic, and nothing may come out as paid unless the reply said
// SUCCESS/SUCCESS with status 2 or 3.
func FuzzParseReply(f *testing.F) {
	seeds := []string{
		`{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"AM1","mchOrderNo":"M1","status":2}}`,
		`{"retCode":"SUCCESS","resCode":"SUCCESS","payOrderId":"AM2","status":"1"}`,
		`{"retCode":"FAIL","retMsg":"Signature Failed","errCode":"0013"}`,
		`{"retCode":"SUCCESS","resCode":"FAIL","errCode":"0112"}`,
		`{"retCode":"SUCCESS","resCode":"SUCCESS","status":2.0e0}`,
		`{"retCode":"SUCCESS","resCode":"SUCCESS","status":"  3 "}`,
		`{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":null,"status":null}`,
		`{"retCode":"SUCCESS","resCode":"SUCC`,
		`<html>502</html>`,
		"\x00\xff{}",
	}
	for _, s := range seeds {
		f.Add([]byte(s), "create_order")
		f.Add([]byte(s), "query_order")
	}
	f.Fuzz(func(t *testing.T, body []byte, op string) {
		r, err := ParseReply(body)
		if err != nil {
			return
		}
		res := r.Classify(op)
		if res.Outcome == OutcomePaid {
			if r.RetCode != "SUCCESS" || r.ResCode != "SUCCESS" || (r.Status != 2 && r.Status != 3) {
				t.Fatalf("paid from %q", body)
			}
		}
		if res.Outcome == OutcomeUnknown || res.Outcome == OutcomeFailed || res.Outcome == OutcomeNotFound {
			if res.Err == nil {
				t.Fatalf("outcome %v without error for %q", res.Outcome, body)
			}
		}
	})
}

// FuzzSignVerify checks that a signature verifies over the fields it was
// made from and fails when any value changes.
func FuzzSignVerify(f *testing.F) {
	f.Add("mchId", "10000576", "mchOrderNo", "1557771065", "TESTKEY1234567890")
	f.Add("a", "apple", "b", "boat&c=cat", "test")
	f.Add("subject", "中文 A&B", "body", "", "k")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2, key string) {
		fields := map[string]string{n1: v1, n2: v2}
		sig := Sign(fields, key)
		if len(sig) != 32 {
			t.Fatalf("signature length %d", len(sig))
		}
		if !Verify(fields, key, sig) {
			t.Fatal("round trip failed")
		}
		if n1 == "sign" || v1 == "" {
			return
		}
		changed := map[string]string{n1: v1 + "x", n2: v2}
		if n1 == n2 {
			return
		}
		if Verify(changed, key, sig) {
			t.Fatalf("changed value %q verified", n1)
		}
	})
}

// FuzzScalar checks the reply parser's fast reading of a field against
// encoding/json's: for every JSON value, the same text and the same
// verdict (what the signature covers must not change with the shortcut).
func FuzzScalar(f *testing.F) {
	for _, s := range []string{`"AM20261127"`, `"中文 A&B"`, `"a\"b"`, `"\u00e9\/"`, `"tab	in"`, "\"bad\xff\"", `"\ud800"`,
		`2`, `-0.5e+3`, `2.0e0`, `1e400`, `true`, `false`, `null`, `{}`, `[1]`, ` "x" `, `""`, `"`, `01`, `1.`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, raw []byte) {
		got, gotOK := scalar(raw)
		want, wantOK := scalarReference(raw)
		if !json.Valid(raw) {
			// The parser only hands over values its decoder accepted;
			// for anything else it must still not invent a value.
			if gotOK && !wantOK {
				t.Fatalf("scalar(%q) = %q from invalid JSON", raw, got)
			}
			return
		}
		if got != want || gotOK != wantOK {
			t.Fatalf("scalar(%q) = %q, %v; encoding/json says %q, %v", raw, got, gotOK, want, wantOK)
		}
	})
}

// scalarReference is scalar done wholly with encoding/json.
func scalarReference(raw []byte) (string, bool) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", false
	}
	switch raw[0] {
	case '"':
		var s string
		if json.Unmarshal(raw, &s) != nil {
			return "", false
		}
		return s, true
	case 't', 'f':
		var b bool
		if json.Unmarshal(raw, &b) != nil {
			return "", false
		}
		return strconv.FormatBool(b), true
	case 'n', '{', '[':
		return "", false
	default:
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", false
		}
		return n.String(), true
	}
}

// FuzzEncode holds the request encoder to what encoding/json makes of the
// same object as a map (HTML escaping off), and to Sign over the same
// fields: names, values and number literals of any shape, duplicates and a
// field named "sign" included.
func FuzzEncode(f *testing.F) {
	f.Add("mchOrderNo", "L01-00000042-AB12", "amount", "2865", true, "subject", "Caf\u00e9 <A&B> \"q\" \\ \u2028", "TESTKEY")
	f.Add("a", "\x00\x1f\x7f\xff\xfe", "b", "-0.5e+3", true, "a", "again", "k")
	f.Add("sign", "forged", "amount", "01", true, "body", "\t\n\r\b\f", "")
	f.Add("x", "1", "y", " 1", true, "z", "\ud7ff\U0010ffff\u2029", "key")
	f.Fuzz(func(t *testing.T, n1, v1, n2, v2 string, num bool, n3, v3, key string) {
		fs := fields{{n1, v1, false}, {n2, v2, num}, {n3, v3, false}}
		got, gotErr := fs.encode(key)

		// The encoding as it was built before: a map through encoding/json.
		m := map[string]string{}
		obj := map[string]any{}
		for _, fl := range fs {
			if fl.value == "" {
				continue
			}
			m[fl.name] = fl.value
			if fl.number {
				obj[fl.name] = json.Number(fl.value)
			} else {
				obj[fl.name] = fl.value
			}
		}
		obj["sign"] = Sign(m, key)
		var buf bytes.Buffer
		enc := json.NewEncoder(&buf)
		enc.SetEscapeHTML(false)
		wantErr := enc.Encode(obj)
		if (gotErr != nil) != (wantErr != nil) {
			t.Fatalf("error %v, encoding/json says %v", gotErr, wantErr)
		}
		if wantErr != nil {
			return
		}
		want := url.Values{"params": {strings.TrimSuffix(buf.String(), "\n")}}.Encode()
		if string(got) != want {
			t.Fatalf("encoded\n %s\nwant\n %s", got, want)
		}
	})
}

// FuzzParseReplySplit holds ParseReply, which splits a reply's object
// itself, to the parser it replaced (parseReplyStd below: a map through
// encoding/json): the same Reply, field for field, or an error for the
// same bodies. Duplicate names, escaped and non-ASCII names, nested
// payOrder of every type, whitespace and invalid JSON among the seeds.
func FuzzParseReplySplit(f *testing.F) {
	for _, s := range []string{
		`{"retCode":"SUCCESS","resCode":"SUCCESS","payOrder":{"payOrderId":"AM1","mchOrderNo":"M1","status":2}}`,
		`{"retCode":"SUCCESS","resCode":"SUCCESS","mchOrderNo":"L01-1","payOrderId":"AM2","status":2,"amount":2865,"currency":"cad","sign":"AB"}`,
		` { "status" : "1" , "status" : {} , "amount":1e3, "sign":"x", "sign":null } `,
		`{"a\u0062":"1","\u00e9":"2","\xff":"3","a\"b":4,"":5}`,
		`{"payOrder":null}`, `{"payOrder":[1,{"status":2}]}`, `{"payOrder":"{\"status\":2}"}`,
		`{"payOrder":{"status":2,"status":3,"amount":"7","currency":"usd","channelId":"WX"},"payOrder":{"status":4}}`,
		`{"status":2}x`, `{"status":2,}`, `{"status"2}`, `[{"status":2}]`, `null`, ` null `, `"x"`, `{}`, `{"k":[]}`,
		`{"retMsg":"a\nb\u2028","errCode":"0112","paySuccTime":"1764400000000","status":-1,"amount":"-5"}`,
		`{"status":true,"amount":false,"retCode":"success","resCode":["SUCCESS"]}`,
		"{\"status\":\"2\"\t,\r\n\"sign\" :\"Z\"}",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		got, gotErr := ParseReply(body)
		want, wantErr := parseReplyStd(body)
		if (gotErr != nil) != (wantErr != nil) || gotErr != nil && gotErr.Error() != wantErr.Error() {
			t.Fatalf("%q: error %v, encoding/json's parser says %v", body, gotErr, wantErr)
		}
		if !reflect.DeepEqual(got, want) {
			t.Fatalf("%q:\n got %+v\nwant %+v", body, got, want)
		}
	})
}

// parseReplyStd is ParseReply as it was: the reply's object decoded into a
// map by encoding/json. FuzzParseReplySplit holds the new one to it.
func parseReplyStd(body []byte) (*Reply, error) {
	// One object and nothing after it (json.Unmarshal refuses trailing
	// data); its values stay raw, so numbers keep their literals.
	var top map[string]json.RawMessage
	if err := json.Unmarshal(body, &top); err != nil {
		return nil, fmt.Errorf("reply is not one JSON object: %w", err)
	}
	if top == nil {
		return nil, errors.New("reply is JSON null")
	}
	r := &Reply{Status: -1, Amount: -1, Signed: make(map[string]string, len(top))}
	for name, raw := range top {
		s, ok := scalarReference(raw)
		if !ok || s == "" || name == "sign" {
			continue
		}
		r.Signed[name] = s
	}
	get := func(m map[string]json.RawMessage, name string) string {
		s, _ := scalarReference(m[name])
		return s
	}
	r.Sign = get(top, "sign")
	r.RetCode = strings.ToUpper(get(top, "retCode"))
	r.ResCode = strings.ToUpper(get(top, "resCode"))
	r.RetMsg = get(top, "retMsg")
	r.ErrCode = get(top, "errCode")
	r.ErrCodeDes = get(top, "errCodeDes")
	r.PayOrderID = get(top, "payOrderId")
	r.MchOrderNo = get(top, "mchOrderNo")
	r.ChannelID = get(top, "channelId")
	r.Currency = strings.ToUpper(get(top, "currency"))
	status := get(top, "status")
	amount := get(top, "amount")
	paid := get(top, "paySuccTime")
	if raw, ok := top["payOrder"]; ok {
		var nested map[string]json.RawMessage
		if json.Unmarshal(raw, &nested) == nil && nested != nil {
			if v := get(nested, "payOrderId"); v != "" {
				r.PayOrderID = v
			}
			if v := get(nested, "mchOrderNo"); v != "" {
				r.MchOrderNo = v
			}
			// The signed top-level status wins; the nested one is used
			// only when there is no other, and is marked as unsigned.
			if v := get(nested, "status"); v != "" && status == "" {
				status, r.StatusNested = v, true
			}
			if v := get(nested, "amount"); v != "" && amount == "" {
				amount = v
			}
			if v := get(nested, "channelId"); v != "" && r.ChannelID == "" {
				r.ChannelID = v
			}
			if v := get(nested, "currency"); v != "" && r.Currency == "" {
				r.Currency = strings.ToUpper(v)
			}
		}
	}
	if n, err := strconv.Atoi(strings.TrimSpace(status)); err == nil && n >= 0 {
		r.Status = n
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(amount), 10, 64); err == nil && n >= 0 {
		r.Amount = n
	}
	if n, err := strconv.ParseInt(strings.TrimSpace(paid), 10, 64); err == nil && n > 0 {
		r.PaidAt = n
	}
	return r, nil
}
