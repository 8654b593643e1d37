package iotpay

import (
	"bytes"
	"encoding/json"
	"net/url"
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
		if got != want {
			t.Fatalf("encoded\n %s\nwant\n %s", got, want)
		}
	})
}
