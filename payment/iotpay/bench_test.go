package iotpay

import "testing"

// BenchmarkSignEncodeParse measures the client's own work per request:
// signing and encoding a create_order, then parsing, verifying and
// classifying a reply.
func BenchmarkSignEncodeParse(b *testing.B) {
	const key = "TESTKEY1234567890"
	// In the order CreateOrder lists them (by name).
	f := fields{
		{"amount", "2865", true}, {"body", "checkout", false}, {"channelId", ChannelWeChat, false},
		{"clientIp", "192.168.1.20", false}, {"codeType", "barcode", false}, {"currency", "CAD", false},
		{"identityCode", "134567890123456789", false}, {"jobNo", "cashier1", false}, {"mchId", "10000576", false},
		{"mchOrderNo", "L01-000123-7F3K2Q", false}, {"notifyUrl", "http://localhost/notify", false}, {"subject", "scanpay", false},
	}
	replyFields := map[string]string{"retCode": "SUCCESS", "resCode": "SUCCESS", "mchOrderNo": "L01-000123-7F3K2Q", "payOrderId": "AM20261127153000000000000001", "status": "2"}
	sign := Sign(replyFields, key)
	body := []byte(`{"retCode":"SUCCESS","resCode":"SUCCESS","mchOrderNo":"L01-000123-7F3K2Q","payOrderId":"AM20261127153000000000000001","status":2,"sign":"` + sign + `"}`)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := f.encode(key); err != nil {
			b.Fatal(err)
		}
		r, err := ParseReply(body)
		if err != nil {
			b.Fatal(err)
		}
		if !Verify(r.Signed, key, r.Sign) {
			b.Fatal("verify")
		}
		if r.Classify("create_order").Outcome != OutcomePaid {
			b.Fatal("classify")
		}
	}
}
